//! Derived variants of a photo, made at run time: the edits an image meets on its way between
//! organisations (re-compression, scaling, sensor noise, exposure). Deterministic for a seed.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, RgbImage};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// One kind of edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// JPEG re-encode at quality 75.
    Jpeg75,
    /// Scaled to half size (Lanczos3), PNG.
    Half,
    /// Gaussian noise, σ = 8 grey levels, PNG.
    Noise,
    /// Brightness × 1.2, clipped, PNG.
    Bright,
}

impl Edit {
    /// Every edit, in report order.
    pub const ALL: [Edit; 4] = [Edit::Jpeg75, Edit::Half, Edit::Noise, Edit::Bright];

    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Edit::Jpeg75 => "jpeg75",
            Edit::Half => "half",
            Edit::Noise => "noise8",
            Edit::Bright => "bright1.2",
        }
    }

    /// Apply the edit to a decoded photo and encode the result. `seed` drives the noise.
    ///
    /// # Errors
    /// An encoder failure, as text.
    pub fn apply(self, photo: &DynamicImage, seed: u64) -> Result<Vec<u8>, String> {
        let rgb = photo.to_rgb8();
        match self {
            Edit::Jpeg75 => {
                let mut out = Vec::new();
                rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, 75))
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }
            Edit::Half => {
                let (w, h) = (rgb.width().div_ceil(2), rgb.height().div_ceil(2));
                png(&image::imageops::resize(&rgb, w, h, FilterType::Lanczos3))
            }
            Edit::Noise => {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let mut img = rgb;
                for p in img.pixels_mut() {
                    for c in &mut p.0 {
                        *c = clip(f64::from(*c) + 8.0 * gaussian(&mut rng));
                    }
                }
                png(&img)
            }
            Edit::Bright => {
                let mut img = rgb;
                for p in img.pixels_mut() {
                    for c in &mut p.0 {
                        *c = clip(f64::from(*c) * 1.2);
                    }
                }
                png(&img)
            }
        }
    }
}

fn clip(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut impl RngCore) -> f64 {
    let unit = |r: &mut dyn RngCore| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let u1 = unit(rng).max(f64::MIN_POSITIVE);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn png(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        }))
    }

    #[test]
    fn every_edit_decodes_and_changes_the_pixels() {
        let original = photo();
        for edit in Edit::ALL {
            let bytes = edit.apply(&original, 7).unwrap();
            let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
            if edit == Edit::Half {
                assert_eq!(back.dimensions(), (32, 24));
            } else {
                assert_eq!(back.dimensions(), (64, 48), "{}", edit.name());
                assert_ne!(back, original.to_rgb8(), "{}", edit.name());
            }
        }
    }

    #[test]
    fn noise_is_deterministic_for_a_seed_and_has_the_stated_spread() {
        let original = photo();
        let a = Edit::Noise.apply(&original, 1).unwrap();
        assert_eq!(a, Edit::Noise.apply(&original, 1).unwrap());
        assert_ne!(a, Edit::Noise.apply(&original, 2).unwrap());
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let xs: Vec<f64> = (0..100_000).map(|_| gaussian(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
