#!/usr/bin/env bash
# (Re)create fuzz/corpus/<target>/: seeds made by the project's own encoders, signed and sealed
# with the fixed keys the targets use (obscura-fuzz's write_seeds example), and a few small test
# photos for the image target. Only files named seed-* are replaced; inputs a fuzzer run saved
# elsewhere are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=fuzz/corpus
mkdir -p "$corpus"
find "$corpus" -type f -name 'seed-*' -delete

cargo run --quiet -p obscura-fuzz --example write_seeds -- "$corpus"

# Small files of both formats the test data has (the image target also gets generated WebP and
# GIF seeds from write_seeds).
photos=(
  testdata/photos/microaneurysms.png
  testdata/photos/horse.png
  testdata/derived/microaneurysms.half.png
  testdata/derived/horse.grey.png
  testdata/derived/microaneurysms.q75.jpg
  testdata/derived/clock_motion.q75.jpg
  testdata/derived/horse.q75.jpg
  testdata/derived/text.q75.jpg
)
for photo in "${photos[@]}"; do
  cp "$photo" "$corpus/image/seed-photo-$(basename "$photo")"
done

for dir in "$corpus"/*/; do
  printf '%-18s %3d files %6d KiB\n' "$(basename "$dir")" \
    "$(find "$dir" -type f | wc -l)" "$(du -sk "$dir" | cut -f1)"
done
