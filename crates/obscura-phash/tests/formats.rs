//! Every format and colour layout we accept decodes to the luma Pillow would give, so a photo
//! hashes the same whatever container it arrives in.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat};
use obscura_phash::{decode_luma, hash_luma, phash64, Limits};

fn rgb_photo() -> DynamicImage {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/photos/astronaut.png"
    ))
    .unwrap();
    image::load_from_memory(&bytes).unwrap()
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn lossless_containers_give_the_same_hash() {
    let img = rgb_photo();
    let want = phash64(&encode(&img, ImageFormat::Png)).unwrap();
    assert_eq!(want.to_string(), "0xc2924c5532bddfc8");
    for (what, bytes) in [
        (
            "rgba png",
            encode(&DynamicImage::ImageRgba8(img.to_rgba8()), ImageFormat::Png),
        ),
        ("webp lossless", encode(&img, ImageFormat::WebP)),
        (
            "16-bit rgb png",
            encode(&DynamicImage::ImageRgb16(img.to_rgb16()), ImageFormat::Png),
        ),
    ] {
        assert_eq!(phash64(&bytes).unwrap(), want, "{what}");
    }
}

#[test]
fn grey_layouts_agree() {
    let grey = DynamicImage::ImageLuma8(rgb_photo().to_luma8());
    let want = phash64(&encode(&grey, ImageFormat::Png)).unwrap();
    for (what, bytes) in [
        (
            "grey+alpha png",
            encode(
                &DynamicImage::ImageLumaA8(grey.to_luma_alpha8()),
                ImageFormat::Png,
            ),
        ),
        (
            "16-bit grey png",
            encode(
                &DynamicImage::ImageLuma16(grey.to_luma16()),
                ImageFormat::Png,
            ),
        ),
    ] {
        assert_eq!(phash64(&bytes).unwrap(), want, "{what}");
    }
}

/// A palette PNG and a GIF (first frame) of a 4-colour image decode to Pillow's luma of each
/// palette entry.
#[test]
fn palette_png_and_gif() {
    let palette: [[u8; 3]; 4] = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [20, 40, 250]];
    let (w, h) = (64u32, 48u32);
    let index = |x: u32, y: u32| ((x / 16 + y / 12) % 4) as u8;
    let luma = |c: [u8; 3]| {
        ((u32::from(c[0]) * 19595 + u32::from(c[1]) * 38470 + u32::from(c[2]) * 7471 + 0x8000)
            >> 16) as u8
    };
    let want: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| luma(palette[index(x, y) as usize]))
        .collect();

    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette.concat());
        let mut wr = enc.write_header().unwrap();
        let data: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| index(x, y)))
            .collect();
        wr.write_image_data(&data).unwrap();
    }
    let got = decode_luma(&png_bytes, &Limits::default()).unwrap();
    assert_eq!((got.width, got.height), (w, h));
    assert_eq!(got.pixels, want, "palette png");

    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(palette[index(x, y) as usize]));
    let gif = encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Gif);
    let got = decode_luma(&gif, &Limits::default()).unwrap();
    assert_eq!(got.pixels, want, "gif");
    // And the hash is defined for it.
    let _ = hash_luma(&got);
}

#[test]
fn tiny_and_thin_images_hash() {
    for (w, h) in [(1, 1), (1, 300), (300, 1), (31, 33)] {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 7 + y * 13) % 256) as u8])
        }));
        phash64(&encode(&img, ImageFormat::Png)).unwrap();
    }
}
