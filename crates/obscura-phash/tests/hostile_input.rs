//! Untrusted bytes reach the decoder straight from users: garbage, truncated files and
//! decompression bombs must give a typed error, never a panic or a huge allocation.

use obscura_phash::{decode_luma, phash64, Error, Limits};
use proptest::prelude::*;

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../testdata/photos/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// CRC-32 (ISO-HDLC) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `w × h` pixels, followed by the start of a valid zlib stream, as a
/// decompression bomb looks before it expands.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        drop(enc.write_header().unwrap());
    }
    out.truncate(8 + 25); // signature + IHDR
                          // zlib header, then a non-final stored block of 1024 zero bytes.
    let mut data = vec![0x78, 0x01, 0x00, 0x00, 0x04, 0xff, 0xfb];
    data.extend([0u8; 1024]);
    let mut chunk = b"IDAT".to_vec();
    chunk.extend(&data);
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32(&chunk).to_be_bytes());
    out
}

#[test]
fn garbage_is_unknown_format() {
    assert!(matches!(phash64(b""), Err(Error::UnknownFormat)));
    assert!(matches!(
        phash64(b"hello, world"),
        Err(Error::UnknownFormat)
    ));
    assert!(matches!(phash64(&[0u8; 4096]), Err(Error::UnknownFormat)));
}

#[test]
fn decompression_bomb_refused_from_header() {
    let bomb = png_bomb(100_000, 100_000);
    match phash64(&bomb) {
        Err(Error::TooLarge {
            width: 100_000,
            height: 100_000,
            max_pixels: 100_000_000,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A lower limit is honoured too.
    let small = Limits { max_pixels: 1000 };
    assert!(matches!(
        decode_luma(&photo("camera.png"), &small),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn truncated_files_are_decode_errors() {
    // Cut two bytes short, a JPEG loses its end-of-image marker: refused, with the reason.
    let jpeg = photo("rocket.jpg");
    match phash64(&jpeg[..jpeg.len() - 2]) {
        Err(Error::Decode { reason, .. }) => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("{other:?}"),
    }
    for name in ["camera.png", "astronaut.png", "rocket.jpg"] {
        let bytes = photo(name);
        let full = phash64(&bytes).unwrap();
        for cut in [16, 64, 200, bytes.len() / 2, bytes.len() - 1] {
            match phash64(&bytes[..cut]) {
                Err(Error::Decode { .. }) | Err(Error::UnknownFormat) => {}
                // A PNG cut inside its trailer still holds every pixel.
                Ok(h) if name.ends_with(".png") && h == full => {}
                // A JPEG cut anywhere is refused, though its decoder would pad the missing tail
                // with grey and call the image whole.
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_png_never_panics(flips in prop::collection::vec((0usize..140_000, any::<u8>()), 1..8)) {
        let mut bytes = photo("camera.png");
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] ^= v | 1;
        }
        let _ = phash64(&bytes);
    }

    #[test]
    fn random_bytes_with_image_magic_never_panic(
        magic in prop::sample::select(vec![
            b"\x89PNG\r\n\x1a\n".to_vec(), b"\xff\xd8\xff".to_vec(), b"GIF89a".to_vec(), b"RIFF\0\0\0\0WEBPVP8 ".to_vec()
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = magic;
        bytes.extend(tail);
        let _ = phash64(&bytes);
    }
}
