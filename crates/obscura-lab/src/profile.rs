//! The "medium" evaluation profile: 19 edits an image meets on its way between organisations,
//! plus the original, so 20 samples per photo. Every edit is made at run time from the decoded
//! photo and is deterministic: its random choices come from a ChaCha20 stream seeded from the
//! profile seed (2025), the photo's name and the edit's name, so adding or removing photos does
//! not change the edits of the others.
//!
//! JPEG is written by `jpeg-encoder` (standard tables, 4:2:0 unless stated), WebP by libwebp
//! (lossy), everything else as PNG so the edit is the only change. Geometry uses bicubic
//! sampling (Keys, a = −0.5) with black outside the source.

use std::io::Cursor;

use crate::Error;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{ImageEncoder, RgbImage};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Seed of the profile.
pub const SEED: u64 = 2025;

/// One sample kind of the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    /// The photo file as it is.
    Original,
    /// JPEG quality 75.
    Jpeg75,
    /// JPEG quality 60.
    Jpeg60,
    /// JPEG quality 50 with 4:2:2 chroma subsampling.
    Jpeg50Chroma422,
    /// Lossy WebP quality 70.
    Webp70,
    /// Rotated 30° counter-clockwise about the centre, black corners, same size.
    RotatePlus30,
    /// Rotated 30° clockwise.
    RotateMinus30,
    /// A window 30–35 % smaller on each side, at a random position, resized back.
    Crop,
    /// Each corner moved by up to ±22 % of the short side.
    Perspective,
    /// Down to 0.7× (bilinear), back up (nearest).
    Resample,
    /// Gamma 0.7.
    Gamma07,
    /// Gamma 1.3.
    Gamma13,
    /// Brightness × 0.75.
    Bright075,
    /// Contrast × 1.3 about the mean grey level.
    Contrast13,
    /// Gaussian noise, σ = 10 grey levels.
    Noise10,
    /// Gaussian noise, σ = 15.
    Noise15,
    /// 5 % of pixels set to black or white.
    SaltPepper5,
    /// Horizontal motion blur over about 1/40 of the width.
    MotionBlur,
    /// "OBSCURA" in white at 50 % opacity, bottom right, a third of the width.
    Watermark,
    /// A solid rectangle covering 10–20 % of the area.
    Occlusion,
}

impl Transform {
    /// Every sample kind, in report order.
    pub const ALL: [Transform; 20] = [
        Transform::Original,
        Transform::Jpeg75,
        Transform::Jpeg60,
        Transform::Jpeg50Chroma422,
        Transform::Webp70,
        Transform::RotatePlus30,
        Transform::RotateMinus30,
        Transform::Crop,
        Transform::Perspective,
        Transform::Resample,
        Transform::Gamma07,
        Transform::Gamma13,
        Transform::Bright075,
        Transform::Contrast13,
        Transform::Noise10,
        Transform::Noise15,
        Transform::SaltPepper5,
        Transform::MotionBlur,
        Transform::Watermark,
        Transform::Occlusion,
    ];

    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transform::Original => "original",
            Transform::Jpeg75 => "jpeg75",
            Transform::Jpeg60 => "jpeg60",
            Transform::Jpeg50Chroma422 => "jpeg50_422",
            Transform::Webp70 => "webp70",
            Transform::RotatePlus30 => "rotate+30",
            Transform::RotateMinus30 => "rotate-30",
            Transform::Crop => "crop30-35",
            Transform::Perspective => "perspective22",
            Transform::Resample => "resample0.7",
            Transform::Gamma07 => "gamma0.7",
            Transform::Gamma13 => "gamma1.3",
            Transform::Bright075 => "bright0.75",
            Transform::Contrast13 => "contrast1.3",
            Transform::Noise10 => "noise10",
            Transform::Noise15 => "noise15",
            Transform::SaltPepper5 => "saltpepper5",
            Transform::MotionBlur => "motionblur",
            Transform::Watermark => "watermark",
            Transform::Occlusion => "occlusion10-20",
        }
    }

    /// The sample of the photo named `name`: its file `bytes`, decoded to 8-bit RGB as `img`.
    ///
    /// # Errors
    /// An encoder failure, as text.
    pub fn apply(self, name: &str, bytes: &[u8], img: &RgbImage) -> Result<Vec<u8>, Error> {
        let mut rng = self.rng(name);
        let (w, h) = img.dimensions();
        match self {
            Transform::Original => Ok(bytes.to_vec()),
            Transform::Jpeg75 => jpeg(img, 75, jpeg_encoder::SamplingFactor::R_4_2_0),
            Transform::Jpeg60 => jpeg(img, 60, jpeg_encoder::SamplingFactor::R_4_2_0),
            Transform::Jpeg50Chroma422 => jpeg(img, 50, jpeg_encoder::SamplingFactor::R_4_2_2),
            Transform::Webp70 => Ok(webp::Encoder::from_rgb(img.as_raw(), w, h)
                .encode(70.0)
                .to_vec()),
            Transform::RotatePlus30 => png(&rotate(img, 30.0)),
            Transform::RotateMinus30 => png(&rotate(img, -30.0)),
            Transform::Crop => {
                let f = uniform(&mut rng, 0.30, 0.35);
                let cw = ((f64::from(w) * (1.0 - f)).round() as u32).max(1);
                let ch = ((f64::from(h) * (1.0 - f)).round() as u32).max(1);
                let x = below(&mut rng, w - cw + 1);
                let y = below(&mut rng, h - ch + 1);
                let window = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
                png(&image::imageops::resize(
                    &window,
                    w,
                    h,
                    FilterType::CatmullRom,
                ))
            }
            Transform::Perspective => png(&perspective(img, 0.22, &mut rng)),
            Transform::Resample => {
                let sw = ((f64::from(w) * 0.7).round() as u32).max(1);
                let sh = ((f64::from(h) * 0.7).round() as u32).max(1);
                let small = image::imageops::resize(img, sw, sh, FilterType::Triangle);
                png(&image::imageops::resize(&small, w, h, FilterType::Nearest))
            }
            Transform::Gamma07 => png(&map_levels(img.clone(), |v| 255.0 * (v / 255.0).powf(0.7))),
            Transform::Gamma13 => png(&map_levels(img.clone(), |v| 255.0 * (v / 255.0).powf(1.3))),
            Transform::Bright075 => png(&map_levels(img.clone(), |v| v * 0.75)),
            Transform::Contrast13 => {
                let mean = mean_grey(img);
                png(&map_levels(img.clone(), |v| mean + 1.3 * (v - mean)))
            }
            Transform::Noise10 => png(&noise(img.clone(), 10.0, &mut rng)),
            Transform::Noise15 => png(&noise(img.clone(), 15.0, &mut rng)),
            Transform::SaltPepper5 => {
                let mut img = img.clone();
                for p in img.pixels_mut() {
                    if uniform(&mut rng, 0.0, 1.0) < 0.05 {
                        let v = if rng.next_u32() & 1 == 0 { 0 } else { 255 };
                        p.0 = [v; 3];
                    }
                }
                png(&img)
            }
            Transform::MotionBlur => png(&motion_blur(img, (w / 40).max(5) | 1)),
            Transform::Watermark => png(&watermark(img.clone())),
            Transform::Occlusion => png(&occlude(img.clone(), &mut rng)),
        }
    }

    /// The edit's own random stream for one photo.
    fn rng(self, photo: &str) -> ChaCha20Rng {
        let mut h = blake3::Hasher::new();
        h.update(b"obscura/eval/medium");
        h.update(&SEED.to_le_bytes());
        h.update(photo.as_bytes());
        h.update(&[0]);
        h.update(self.name().as_bytes());
        ChaCha20Rng::from_seed(*h.finalize().as_bytes())
    }
}

/// Uniform in `[lo, hi)`.
fn uniform(rng: &mut impl RngCore, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

/// Uniform in `0..bound` (`bound ≥ 1`); the bias of a 64-bit modulus is far below anything an
/// evaluation can see.
fn below(rng: &mut impl RngCore, bound: u32) -> u32 {
    (rng.next_u64() % u64::from(bound.max(1))) as u32
}

fn clip(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut impl RngCore) -> f64 {
    let u1 = uniform(rng, 0.0, 1.0).max(f64::MIN_POSITIVE);
    let u2 = uniform(rng, 0.0, 1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Every channel value through `f`, rounded and clipped (by a 256-entry table).
pub(crate) fn map_levels(mut img: RgbImage, f: impl Fn(f64) -> f64) -> RgbImage {
    let table: Vec<u8> = (0..=255u8).map(|v| clip(f(f64::from(v)))).collect();
    for c in img.iter_mut() {
        *c = table[*c as usize];
    }
    img
}

/// Gaussian noise of standard deviation `sigma` added to every channel value.
pub(crate) fn noise(mut img: RgbImage, sigma: f64, rng: &mut impl RngCore) -> RgbImage {
    for c in img.iter_mut() {
        *c = clip(f64::from(*c) + sigma * gaussian(rng));
    }
    img
}

/// Mean ITU-R 601 luma, as contrast enhancers take it.
fn mean_grey(img: &RgbImage) -> f64 {
    let sum: f64 = img
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(f64::from);
            0.299 * r + 0.587 * g + 0.114 * b
        })
        .sum();
    (sum / f64::from((img.width() * img.height()).max(1))).round()
}

/// PNG, fast compression: the samples are decoded again at once, never kept.
pub(crate) fn png(img: &RgbImage) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(
        Cursor::new(&mut out),
        CompressionType::Fast,
        PngFilter::Adaptive,
    )
    .write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

fn jpeg(
    img: &RgbImage,
    quality: u8,
    sampling: jpeg_encoder::SamplingFactor,
) -> Result<Vec<u8>, Error> {
    let (w, h) = (
        u16::try_from(img.width()).map_err(|_| "too wide for JPEG".to_string())?,
        u16::try_from(img.height()).map_err(|_| "too tall for JPEG".to_string())?,
    );
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_sampling_factor(sampling);
    enc.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Keys' cubic convolution kernel with a = −0.5.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        A * (((x - 5.0) * x + 8.0) * x - 4.0)
    } else {
        0.0
    }
}

/// Bicubic sample at continuous position `(x, y)` (pixel centres at `i + 0.5`), black outside.
fn sample(img: &RgbImage, x: f64, y: f64) -> [u8; 3] {
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    if x0 < -2 || y0 < -2 || x0 > w + 1 || y0 > h + 1 {
        return [0; 3];
    }
    let mut acc = [0.0f64; 3];
    for yy in y0 - 1..=y0 + 2 {
        if !(0..h).contains(&yy) {
            continue;
        }
        let wy = cubic(fy - yy as f64);
        for xx in x0 - 1..=x0 + 2 {
            if !(0..w).contains(&xx) {
                continue;
            }
            let wgt = wy * cubic(fx - xx as f64);
            let p = img.get_pixel(xx as u32, yy as u32).0;
            for c in 0..3 {
                acc[c] += wgt * f64::from(p[c]);
            }
        }
    }
    acc.map(clip)
}

/// Every output pixel `(x, y)` sampled at `source(x + ½, y + ½)`.
fn remap(img: &RgbImage, source: impl Fn(f64, f64) -> (f64, f64)) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (sx, sy) = source(f64::from(x) + 0.5, f64::from(y) + 0.5);
        image::Rgb(sample(img, sx, sy))
    })
}

/// Rotation by `degrees` counter-clockwise about the centre; the same size as the input, which
/// is the centre crop of the black-padded, expanded rotation.
fn rotate(img: &RgbImage, degrees: f64) -> RgbImage {
    let (cx, cy) = (f64::from(img.width()) / 2.0, f64::from(img.height()) / 2.0);
    let (s, c) = degrees.to_radians().sin_cos();
    // Inverse mapping: output → source is a clockwise turn (y grows downwards).
    remap(img, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        (cx + c * dx - s * dy, cy + s * dx + c * dy)
    })
}

/// A projective warp: the output's corners come from the source's corners each moved by up to
/// `±jitter` of the short side.
fn perspective(img: &RgbImage, jitter: f64, rng: &mut impl RngCore) -> RgbImage {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let span = jitter * w.min(h);
    let corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let moved =
        corners.map(|(x, y)| (x + uniform(rng, -span, span), y + uniform(rng, -span, span)));
    let Some(m) = homography(&corners, &moved) else {
        return img.clone();
    };
    remap(img, |x, y| {
        let d = m[6] * x + m[7] * y + 1.0;
        (
            (m[0] * x + m[1] * y + m[2]) / d,
            (m[3] * x + m[4] * y + m[5]) / d,
        )
    })
}

/// The homography taking each `from[i]` to `to[i]` (eight coefficients, the ninth is 1), or
/// `None` for degenerate corners.
fn homography(from: &[(f64, f64); 4], to: &[(f64, f64); 4]) -> Option<[f64; 8]> {
    let mut a = [[0.0f64; 9]; 8];
    for (i, (&(u, v), &(x, y))) in from.iter().zip(to).enumerate() {
        a[2 * i] = [u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x, x];
        a[2 * i + 1] = [0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y, y];
    }
    // Gauss–Jordan with partial pivoting.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let p = a[col][col];
        for v in &mut a[col][col..] {
            *v /= p;
        }
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col];
                for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * p;
                }
            }
        }
    }
    Some(std::array::from_fn(|i| a[i][8]))
}

/// Horizontal box blur over `len` pixels (odd), edges clamped.
fn motion_blur(img: &RgbImage, len: u32) -> RgbImage {
    let half = i64::from(len / 2);
    let w = i64::from(img.width());
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let mut acc = [0u32; 3];
        for dx in -half..=half {
            let xx = (i64::from(x) + dx).clamp(0, w - 1) as u32;
            let p = img.get_pixel(xx, y).0;
            for c in 0..3 {
                acc[c] += u32::from(p[c]);
            }
        }
        image::Rgb(acc.map(|v| ((v + len / 2) / len) as u8))
    })
}

/// 5 × 7 glyphs of the watermark text, one row per byte (low 5 bits, leftmost pixel high).
const GLYPHS: [(char, [u8; 7]); 7] = [
    ('O', [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e]),
    ('B', [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e]),
    ('S', [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e]),
    ('C', [0x0f, 0x10, 0x10, 0x10, 0x10, 0x10, 0x0f]),
    ('U', [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e]),
    ('R', [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11]),
    ('A', [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11]),
];

const WATERMARK: &str = "OBSCURA";

/// The watermark text in white at 50 % opacity, a third of the width, bottom right.
fn watermark(mut img: RgbImage) -> RgbImage {
    let cols = WATERMARK.len() as u32 * 6 - 1;
    let scale = (img.width() / 3 / cols).max(1);
    let margin = (img.width().min(img.height()) / 50).max(1);
    let (tw, th) = (cols * scale, 7 * scale);
    if tw + margin > img.width() || th + margin > img.height() {
        return img;
    }
    let (x0, y0) = (img.width() - margin - tw, img.height() - margin - th);
    for (i, ch) in WATERMARK.chars().enumerate() {
        let Some((_, rows)) = GLYPHS.iter().find(|(c, _)| *c == ch) else {
            continue;
        };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5u32 {
                if bits >> (4 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = x0 + (i as u32 * 6 + col) * scale + dx;
                        let y = y0 + r as u32 * scale + dy;
                        let p = img.get_pixel_mut(x, y);
                        p.0 = p.0.map(|v| (u16::from(v) + 255).div_ceil(2) as u8);
                    }
                }
            }
        }
    }
    img
}

/// A solid rectangle of random colour covering 10–20 % of the area, aspect 1:2 to 2:1, at a
/// random position.
fn occlude(mut img: RgbImage, rng: &mut impl RngCore) -> RgbImage {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let area = uniform(rng, 0.10, 0.20) * w * h;
    let aspect = uniform(rng, 0.5, 2.0);
    let rw = ((area * aspect).sqrt().round() as u32).clamp(1, img.width());
    let rh = ((area / f64::from(rw)).round() as u32).clamp(1, img.height());
    let x0 = below(rng, img.width() - rw + 1);
    let y0 = below(rng, img.height() - rh + 1);
    let mut colour = [0u8; 3];
    rng.fill_bytes(&mut colour);
    for y in y0..y0 + rh {
        for x in x0..x0 + rw {
            img.get_pixel_mut(x, y).0 = colour;
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::DynamicImage;

    fn photo() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
        }))
    }

    fn encoded(img: &DynamicImage) -> Vec<u8> {
        png(&img.to_rgb8()).unwrap()
    }

    #[test]
    fn every_sample_decodes_at_the_photos_size_and_all_but_the_original_differ() {
        let original = photo();
        let bytes = encoded(&original);
        for t in Transform::ALL {
            let out = t.apply("p", &bytes, &original.to_rgb8()).unwrap();
            let back = image::load_from_memory(&out).unwrap().to_rgb8();
            assert_eq!(back.dimensions(), (120, 90), "{}", t.name());
            if t == Transform::Original {
                assert_eq!(out, bytes);
            } else {
                assert_ne!(back, original.to_rgb8(), "{}", t.name());
            }
        }
    }

    #[test]
    fn samples_are_deterministic_per_photo_name() {
        let original = photo();
        let bytes = encoded(&original);
        for t in [Transform::Crop, Transform::Perspective, Transform::Noise10] {
            let a = t.apply("a", &bytes, &original.to_rgb8()).unwrap();
            assert_eq!(
                a,
                t.apply("a", &bytes, &original.to_rgb8()).unwrap(),
                "{}",
                t.name()
            );
            assert_ne!(
                a,
                t.apply("b", &bytes, &original.to_rgb8()).unwrap(),
                "{}",
                t.name()
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let names: std::collections::HashSet<_> = Transform::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Transform::ALL.len());
    }

    #[test]
    fn rotation_turns_counter_clockwise_and_pads_with_black() {
        // A white dot right of the centre goes up for +90°.
        let mut img = RgbImage::new(41, 41);
        img.put_pixel(30, 20, image::Rgb([255; 3]));
        let out = rotate(&img, 90.0);
        assert!(
            out.get_pixel(20, 10).0[0] > 200,
            "{:?}",
            out.get_pixel(20, 10)
        );
        let white = RgbImage::from_pixel(40, 40, image::Rgb([255; 3]));
        let turned = rotate(&white, 30.0);
        assert_eq!(turned.get_pixel(0, 0).0, [0; 3]);
        assert_eq!(turned.get_pixel(20, 20).0, [255; 3]);
    }

    #[test]
    fn homography_maps_the_corners() {
        let from = [(0.0, 0.0), (10.0, 0.0), (10.0, 8.0), (0.0, 8.0)];
        let to = [(1.0, -1.0), (11.5, 0.5), (9.0, 9.0), (-0.5, 7.0)];
        let m = homography(&from, &to).unwrap();
        for ((u, v), (x, y)) in from.iter().zip(&to) {
            let d = m[6] * u + m[7] * v + 1.0;
            assert!(((m[0] * u + m[1] * v + m[2]) / d - x).abs() < 1e-9);
            assert!(((m[3] * u + m[4] * v + m[5]) / d - y).abs() < 1e-9);
        }
    }

    #[test]
    fn cubic_kernel_interpolates_and_sums_to_one() {
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        for f in [0.1, 0.25, 0.5, 0.9] {
            let s: f64 = (-1..=2).map(|i| cubic(f - f64::from(i))).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn gaussian_has_zero_mean_and_unit_variance() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let xs: Vec<f64> = (0..100_000).map(|_| gaussian(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }

    #[test]
    fn salt_and_pepper_touches_about_five_percent() {
        let grey = DynamicImage::ImageRgb8(RgbImage::from_pixel(200, 200, image::Rgb([128; 3])));
        let out = Transform::SaltPepper5
            .apply("g", &encoded(&grey), &grey.to_rgb8())
            .unwrap();
        let back = image::load_from_memory(&out).unwrap().to_rgb8();
        let hit = back.pixels().filter(|p| p.0 != [128; 3]).count() as f64 / 40_000.0;
        assert!((0.04..0.06).contains(&hit), "{hit}");
    }
}
