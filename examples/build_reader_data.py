#!/usr/bin/env python
"""Write a reader file (questions over many passages, `reader_data.py`) built from a SQuAD file: each question asked
of 10 paragraphs of its article, its own and those sharing the most words with it (`collections_from_squad`).

    python examples/build_reader_data.py ../shared/data/squad_v2/dev-v2.0.json.gz outputs/data/reader-dev-even.json \
        --max_questions 2000 --articles even
    python run_qa.py --model_name_or_path outputs/minilm-span-recipe --validation_file \
        outputs/data/reader-dev-even.json --version_2_with_negative --do_eval --calibrate \
        --output_dir outputs/minilm-span-recipe-reader-calibrated

`--articles even` / `odd` keeps the questions of the even- / odd-numbered articles (counted from 0 in the file), so
that a calibrator fitted on one half is measured on articles it never saw.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reader_data import collections_from_squad, read_squad  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("squad_file", help="SQuAD-format JSON (gzipped or not)")
    parser.add_argument("out", help="the reader file to write (JSON)")
    parser.add_argument("--passages", type=int, default=10, help="passages per question (default 10)")
    parser.add_argument("--max_questions", type=int, help="the first N questions of the file only")
    parser.add_argument("--articles", choices=("all", "even", "odd"), default="all")
    args = parser.parse_args()
    records = collections_from_squad(read_squad(args.squad_file), args.passages)[: args.max_questions]
    if args.articles != "all":
        records = [r for r in records if r["article"] % 2 == (args.articles == "odd")]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"data": records}, f, ensure_ascii=False)
    print(f"{args.out}: {len(records)} questions over {args.passages} passages each")


if __name__ == "__main__":
    main()
