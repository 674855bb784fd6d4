//! The example functions shipped in `examples/room` compute what they say on real photos, and
//! every hostile one is stopped by its own limit, with the sandbox still usable after each.

use obscura_room::sandbox::{Input, RunError, Sandbox};
use obscura_room::work::{InputSpec, Limits, Manifest, OutputKind, OutputSpec, Work};

fn example(name: &str) -> Vec<u8> {
    let path = format!("{}/../../examples/room/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn photo(name: &str) -> (Vec<u8>, Input) {
    let path = format!(
        "{}/../../testdata/photos/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let input = Input::decode(&bytes).unwrap();
    (bytes, input)
}

fn manifest(inputs: usize, kind: OutputKind, parameters: Vec<u8>) -> Manifest {
    Manifest {
        inputs: (0..inputs)
            .map(|i| InputSpec {
                image: [i as u8 + 1; 16],
                label: None,
            })
            .collect(),
        labels: vec![],
        parameters,
        output: OutputSpec {
            kind,
            max_bytes: 1 << 20,
        },
        limits: Limits {
            fuel: 200_000_000,
            memory_bytes: 64 << 20,
        },
        recipients: vec![[9; 32]],
    }
}

#[test]
fn label_counts_counts_the_inputs_of_each_label() {
    let mut m = manifest(5, OutputKind::Json, vec![]);
    m.labels = vec!["cat".into(), "dog".into(), "bird".into()];
    for (input, label) in m
        .inputs
        .iter_mut()
        .zip([Some(1), None, Some(1), Some(0), None])
    {
        input.label = label;
    }
    let work = Work::new(&example("label_counts.wat"), m).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let function = sandbox.compile(&work).unwrap();
    let tiny = Input::from_rgb(1, 1, vec![0, 0, 0]).unwrap();
    let ran = sandbox
        .run(&function, work.manifest(), vec![tiny; 5])
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&ran.output).unwrap();
    assert_eq!(out, serde_json::json!({"unlabelled": 2, "counts": [1, 2]}));
}

#[test]
fn colour_stats_gives_each_photos_size_and_mean_colour() {
    let names = ["chelsea.png", "coffee.png", "camera.png"];
    let inputs: Vec<Input> = names.iter().map(|n| photo(n).1).collect();
    let work = Work::new(
        &example("colour_stats.wat"),
        manifest(3, OutputKind::Json, vec![]),
    )
    .unwrap();
    let sandbox = Sandbox::new().unwrap();
    let function = sandbox.compile(&work).unwrap();
    let ran = sandbox
        .run(&function, work.manifest(), inputs.clone())
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&ran.output).unwrap();
    for (i, name) in names.iter().enumerate() {
        let (bytes, _) = photo(name);
        let rgb = image::load_from_memory(&bytes).unwrap().into_rgb8();
        let n = u64::from(rgb.width()) * u64::from(rgb.height());
        let mean: Vec<u64> = (0..3)
            .map(|c| rgb.pixels().map(|p| u64::from(p.0[c])).sum::<u64>() / n)
            .collect();
        assert_eq!(
            out[i],
            serde_json::json!({"width": rgb.width(), "height": rgb.height(), "mean": mean}),
            "{name}"
        );
    }
    assert!(ran.fuel_used > 0);
}

#[test]
fn blur_thumbnail_blurs_the_region_and_nothing_else() {
    let (bytes, input) = photo("astronaut.png");
    // A 128-pixel thumbnail, the square (32, 16)–(96, 80) blurred with radius 4.
    let parameters: Vec<u8> = [128u32, 32, 16, 96, 80, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let work = Work::new(
        &example("blur_thumbnail.wat"),
        manifest(1, OutputKind::Image, parameters),
    )
    .unwrap();
    let sandbox = Sandbox::new().unwrap();
    let function = sandbox.compile(&work).unwrap();
    let ran = sandbox
        .run(&function, work.manifest(), vec![input])
        .unwrap();
    let png = obscura_room::sandbox::image_png(&ran.output).unwrap();
    let thumb = image::load_from_memory(&png).unwrap().into_rgb8();
    assert_eq!(thumb.dimensions(), (128, 128));
    // Outside the region: the nearest-neighbour sample of the photo, exactly.
    let photo = image::load_from_memory(&bytes).unwrap().into_rgb8();
    let (w, h) = photo.dimensions();
    let mut blurred = 0;
    for y in 0..128 {
        for x in 0..128 {
            let sample = photo.get_pixel(x * w / 128, y * h / 128);
            let inside = (32..96).contains(&x) && (16..80).contains(&y);
            if !inside {
                assert_eq!(thumb.get_pixel(x, y), sample, "({x}, {y})");
            } else if thumb.get_pixel(x, y) != sample {
                blurred += 1;
            }
        }
    }
    assert!(
        blurred > 64 * 64 / 2,
        "only {blurred} pixels of the region changed"
    );
}

/// A hostile function, stopped, and the same sandbox then runs an honest one.
fn stopped(name: &str, kind: OutputKind, limits: Limits, max_output: u32) -> RunError {
    let mut m = manifest(1, kind, vec![]);
    m.limits = limits;
    m.output.max_bytes = max_output;
    let work = Work::new(&example(&format!("hostile/{name}")), m).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let tiny = Input::from_rgb(1, 1, vec![1, 2, 3]).unwrap();
    let error = sandbox
        .compile(&work)
        .and_then(|f| sandbox.run(&f, work.manifest(), vec![tiny.clone()]))
        .unwrap_err();
    let honest = Work::new(
        &example("colour_stats.wat"),
        manifest(1, OutputKind::Json, vec![]),
    )
    .unwrap();
    let f = sandbox.compile(&honest).unwrap();
    assert!(sandbox.run(&f, honest.manifest(), vec![tiny]).is_ok());
    error
}

#[test]
fn an_endless_loop_is_stopped_by_its_fuel() {
    let limits = Limits {
        fuel: 5_000_000,
        memory_bytes: 1 << 20,
    };
    let e = stopped("endless_loop.wat", OutputKind::Json, limits, 64);
    assert_eq!(e, RunError::Fuel(5_000_000));
    assert!(e.to_string().contains("ran out of fuel"), "{e}");
}

#[test]
fn a_memory_bomb_is_stopped_at_its_memory_limit() {
    let limits = Limits {
        fuel: 1_000_000_000,
        memory_bytes: 8 << 20,
    };
    let e = stopped("memory_bomb.wat", OutputKind::Json, limits, 64);
    assert!(
        matches!(e, RunError::Memory { asked, limit } if asked > limit && limit == 8 << 20),
        "{e:?}"
    );
}

/// Memory and tables count together: a function whose memory and a table each fit the limit
/// but together do not is stopped.
#[test]
fn memory_and_tables_together_are_held_to_the_memory_limit() {
    let module = r#"(module
      (memory (export "memory") 100)
      (table 0 funcref)
      (func (export "run") (result i32)
        (drop (table.grow (ref.null func) (i32.const 300000)))
        (i32.const 0)))"#;
    let mut m = manifest(1, OutputKind::Json, vec![]);
    m.limits.memory_bytes = 8 << 20;
    let work = Work::new(module.as_bytes(), m).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let f = sandbox.compile(&work).unwrap();
    let tiny = Input::from_rgb(1, 1, vec![1, 2, 3]).unwrap();
    let e = sandbox.run(&f, work.manifest(), vec![tiny]).unwrap_err();
    // 6.25 MiB of memory and 2.3 MiB of table: each under 8 MiB, together over.
    assert!(
        matches!(e, RunError::Memory { asked, limit } if asked > limit && asked < 2 * limit),
        "{e:?}"
    );
}

#[test]
fn an_output_flood_is_stopped_at_its_output_maximum() {
    let limits = Limits {
        fuel: 1_000_000_000,
        memory_bytes: 1 << 20,
    };
    let e = stopped("output_flood.wat", OutputKind::Text, limits, 100_000);
    assert_eq!(e, RunError::Output(100_000));
}

#[test]
fn a_forbidden_import_is_refused_before_it_runs() {
    let limits = Limits {
        fuel: 1_000_000,
        memory_bytes: 1 << 20,
    };
    let e = stopped("forbidden_import.wat", OutputKind::Json, limits, 64);
    assert_eq!(
        e,
        RunError::Import("wasi_snapshot_preview1.fd_write".into())
    );
}

/// Host copies are charged by size: a function that copies a 3 MiB input a thousand times
/// (3 GiB moved for a few thousand instructions) runs out of fuel first. Were copies free, it
/// would finish and write its output.
#[test]
fn copying_an_input_again_and_again_costs_fuel_by_the_byte() {
    let module = r#"(module
      (import "obscura" "pixels" (func $pixels (param i32 i32) (result i32)))
      (import "obscura" "output" (func $output (param i32 i32)))
      (memory (export "memory") 64)
      (data (i32.const 0) "[]")
      (func (export "run") (result i32)
        (local $n i32)
        (loop $again
          (drop (call $pixels (i32.const 0) (i32.const 16)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $n) (i32.const 1000))))
        (call $output (i32.const 0) (i32.const 2))
        (i32.const 0)))"#;
    let mut m = manifest(1, OutputKind::Json, vec![]);
    m.limits.fuel = 10_000_000;
    let work = Work::new(module.as_bytes(), m).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let f = sandbox.compile(&work).unwrap();
    let big = Input::from_rgb(1024, 1024, vec![7; 1024 * 1024 * 3]).unwrap();
    // 3 MiB a copy at 8 bytes a unit: about 25 copies, not a thousand.
    assert_eq!(
        sandbox.run(&f, work.manifest(), vec![big]).unwrap_err(),
        RunError::Fuel(10_000_000)
    );
}

/// Bulk-memory instructions are charged by what they write: a loop of 16 MiB fills runs out of
/// its million units of fuel in well under a second, not after terabytes.
#[test]
fn a_loop_of_bulk_fills_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 1_000_000,
        memory_bytes: 16 << 20,
    };
    let e = stopped("bulk_fill.wat", OutputKind::Json, limits, 64);
    assert_eq!(e, RunError::Fuel(1_000_000));
}

/// Whatever fuel leaves uncounted, a run ends at its deadline: an endless loop with fuel for
/// minutes, in a sandbox whose deadline allows far less, is stopped at two seconds.
#[test]
fn a_run_past_its_deadline_is_stopped() {
    let mut m = manifest(1, OutputKind::Json, vec![]);
    m.limits.fuel = 200_000_000_000 / 10;
    let work = Work::new(&example("hostile/endless_loop.wat"), m).unwrap();
    let sandbox = Sandbox::with_deadline(u64::MAX).unwrap();
    let f = sandbox.compile(&work).unwrap();
    let tiny = Input::from_rgb(1, 1, vec![1, 2, 3]).unwrap();
    let e = sandbox.run(&f, work.manifest(), vec![tiny]).unwrap_err();
    assert_eq!(e, RunError::Time(2));
    assert_eq!(e.public(), e.to_string());
}

/// What the controller hears of a failed run names the limit, never a value the function
/// chose.
#[test]
fn a_failed_runs_public_reason_carries_nothing_the_function_chose() {
    let module = r#"(module
      (memory (export "memory") 1)
      (func (export "run") (result i32) (i32.const 123456789)))"#;
    let work = Work::new(module.as_bytes(), manifest(1, OutputKind::Json, vec![])).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let f = sandbox.compile(&work).unwrap();
    let input = Input::from_rgb(1, 1, vec![1; 3]).unwrap();
    let e = sandbox
        .run(&f, work.manifest(), vec![input.clone()])
        .unwrap_err();
    assert_eq!(e, RunError::Failed(123456789));
    assert!(!e.public().contains("123456789"), "{}", e.public());
    // An image output whose size header says what the function likes.
    let module = r#"(module
      (import "obscura" "output" (func $output (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "\15\cd\5b\07\01\00\00\00")
      (func (export "run") (result i32)
        (call $output (i32.const 0) (i32.const 8))
        (i32.const 0)))"#;
    let work = Work::new(module.as_bytes(), manifest(1, OutputKind::Image, vec![])).unwrap();
    let f = sandbox.compile(&work).unwrap();
    let e = sandbox.run(&f, work.manifest(), vec![input]).unwrap_err();
    assert!(e.to_string().contains("123456789"), "{e}");
    assert!(!e.public().contains("123456789"), "{}", e.public());
}

#[test]
fn a_copy_outside_the_functions_memory_traps_with_the_call_named() {
    let module = r#"(module
      (import "obscura" "pixels" (func $pixels (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (drop (call $pixels (i32.const 0) (i32.const 65534)))
        (i32.const 0)))"#;
    let work = Work::new(module.as_bytes(), manifest(1, OutputKind::Json, vec![])).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let f = sandbox.compile(&work).unwrap();
    let input = Input::from_rgb(2, 2, vec![1; 12]).unwrap();
    let e = sandbox.run(&f, work.manifest(), vec![input]).unwrap_err();
    assert!(
        matches!(&e, RunError::Trap(why) if why.contains("obscura.pixels")),
        "{e:?}"
    );
}

#[test]
fn an_output_that_is_not_its_kind_is_refused() {
    let module = r#"(module
      (import "obscura" "output" (func $output (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{not json")
      (func (export "run") (result i32)
        (call $output (i32.const 0) (i32.const 9))
        (i32.const 0)))"#;
    let work = Work::new(module.as_bytes(), manifest(1, OutputKind::Json, vec![])).unwrap();
    let sandbox = Sandbox::new().unwrap();
    let f = sandbox.compile(&work).unwrap();
    let input = Input::from_rgb(1, 1, vec![1; 3]).unwrap();
    assert!(matches!(
        sandbox.run(&f, work.manifest(), vec![input]).unwrap_err(),
        RunError::Kind {
            kind: OutputKind::Json,
            ..
        }
    ));
}

#[test]
fn an_image_that_claims_a_huge_size_allocates_nothing() {
    // A PNG header claiming 100000 × 100000 pixels, and nothing else.
    let mut png = image::RgbImage::new(1, 1);
    png.put_pixel(0, 0, image::Rgb([1, 2, 3]));
    let mut bytes = Vec::new();
    png.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    // IHDR's width and height sit at bytes 16..24, its CRC (over type and data) at 29..33:
    // fixed, so the decoder reads the header and meets the limit, not a checksum error.
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = Input::decode(&bytes).unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
}
