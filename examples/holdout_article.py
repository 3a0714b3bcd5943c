#!/usr/bin/env python
"""Split an official SQuAD JSON file by article: one article held out (to choose the no-answer threshold on), the
others for training. Both parts are written as SQuAD JSON with the source's version.

    python examples/holdout_article.py SOURCE.json[.gz] TITLE TRAIN_OUT.json HOLDOUT_OUT.json
"""

import argparse
import gzip
import json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("title", help="title of the article to hold out")
    parser.add_argument("train_out")
    parser.add_argument("holdout_out")
    args = parser.parse_args()
    opener = gzip.open if args.source.endswith(".gz") else open
    with opener(args.source, "rt", encoding="utf-8") as f:
        squad = json.load(f)
    held = [article for article in squad["data"] if article["title"] == args.title]
    if not held:
        titles = ", ".join(article["title"] for article in squad["data"])
        raise SystemExit(f"error: {args.source} has no article titled {args.title!r} (titles: {titles})")
    rest = [article for article in squad["data"] if article["title"] != args.title]
    for path, articles in ((args.train_out, rest), (args.holdout_out, held)):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"version": squad.get("version", ""), "data": articles}, f)
        questions = sum(len(p["qas"]) for article in articles for p in article["paragraphs"])
        print(f"{path}: {len(articles)} article(s), {questions} questions")


if __name__ == "__main__":
    main()
