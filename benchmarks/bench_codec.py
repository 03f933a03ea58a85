"""tf.train.Example encode and decode throughput on real records (image bytes plus boxes).

    python benchmarks/bench_codec.py [--repeat 5]

Measures whatever ``detforge`` is importable: run it once with ``PYTHONPATH`` pointing at an
older checkout and once at this one to compare codecs (the protobuf runtime replaced a
hand-written codec; see the CHANGELOG for the figures). The ratio printed is against copying
the same bytes once, measured in the same run.
"""

from __future__ import annotations

import argparse

from detforge.data.records import decode_example
from detforge.data.shards import parse_example, record_image, to_example

from _common import best_of, dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--copies", type=int, default=5)
    args = ap.parse_args()
    ds, what = dataset()
    samples = list(ds) * args.copies
    images = [record_image(s)[:2] for s in samples]
    encoded = [b"".join(to_example(s, ds.classes, d, f, "0")) for s, (d, f) in zip(samples, images)]
    mb = sum(len(e) for e in encoded) / 1e6

    def encode():
        for s, (d, f) in zip(samples, images):
            b"".join(to_example(s, ds.classes, d, f, "0"))

    def decode():
        for e in encoded:
            parse_example(decode_example(e))

    def copy():
        for e in encoded:
            bytearray(e)

    n = len(encoded)
    t_copy = best_of(args.repeat, copy)
    t_enc = best_of(args.repeat, encode)
    t_dec = best_of(args.repeat, decode)
    print(f"{what} x{args.copies}: {n} records, {mb:.1f} MB")
    print(f"encode: {n / t_enc:9.0f} rec/s ({mb / t_enc:7.1f} MB/s) = {t_copy / t_enc:.2f}x memcpy")
    print(f"decode: {n / t_dec:9.0f} rec/s ({mb / t_dec:7.1f} MB/s) = {t_copy / t_dec:.2f}x memcpy")


if __name__ == "__main__":
    main()
