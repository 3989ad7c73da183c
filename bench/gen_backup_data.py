#!/usr/bin/env python3
"""Generates the backup benchmark's data set: a directory of about --size bytes (default 2 GB)
made of the kinds of files backups meet, the same bytes for the same --seed.

Mix (by bytes, roughly):
- 35% text: log lines and SQL INSERT statements (compresses about 4-8x), in files from 4 KiB
  to 64 MiB;
- 20% structured: JSON documents with repeated keys (compresses well);
- 25% random: incompressible bytes (media, already-compressed archives);
- 20% duplicated: whole copies of earlier files, and "edited" copies that share long runs
  with an earlier file but have inserts at random places (content-defined chunking finds the
  shared runs; fixed-size chunking would not).
Plus 2,000 small files (under 4 KiB) in a nested tree, and a few empty files.

Usage: python3 bench/gen_backup_data.py DIR [--size 2G] [--seed 1]
Prints a summary (files, bytes by kind) and exits 0; refuses to write into a non-empty DIR.
"""
import argparse
import json
import os
import random
import sys

MiB = 1 << 20


def parse_size(s):
    units = {"k": 1 << 10, "m": MiB, "g": 1 << 30}
    s = s.strip().lower().rstrip("b").rstrip("i")
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


WORDS = ("error warn info debug request response user session token cache miss hit upstream "
         "timeout retry connection pool database query index table commit rollback backup restore "
         "steward deploy health check latency p99 queue worker job failed succeeded started").split()


def text_block(rng, size):
    """Log lines and SQL statements, about `size` bytes."""
    out, n = [], 0
    while n < size:
        if rng.random() < 0.5:
            line = "2026-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s id=%d dur=%dms %s\n" % (
                rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59),
                rng.randint(0, 59), rng.randint(0, 999), rng.choice(WORDS).upper(),
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))),
                rng.randint(1, 10**9), rng.randint(0, 5000), rng.choice(WORDS))
        else:
            line = "INSERT INTO events (id, kind, actor, amount, note) VALUES (%d, '%s', 'user%d', %d.%02d, '%s');\n" % (
                rng.randint(1, 10**9), rng.choice(WORDS), rng.randint(1, 50000), rng.randint(0, 99999),
                rng.randint(0, 99), " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))))
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def json_block(rng, size):
    out, n = [], 0
    while n < size:
        doc = {"id": rng.randint(1, 10**12), "type": rng.choice(WORDS), "tags": rng.sample(WORDS, 3),
               "metrics": {w: rng.randint(0, 1000) for w in rng.sample(WORDS, 5)},
               "ok": rng.random() < 0.9}
        s = json.dumps(doc) + "\n"
        out.append(s)
        n += len(s)
    return "".join(out).encode()[:size]


def random_block(rng, size):
    return rng.randbytes(size)


def edited_copy(rng, data):
    """`data` with a few small inserts and deletions at random places."""
    parts, pos = [], 0
    for cut in sorted(rng.sample(range(1, max(2, len(data))), min(8, max(1, len(data) // MiB)))):
        parts.append(data[pos:cut])
        parts.append(rng.randbytes(rng.randint(1, 300)))
        pos = cut + rng.randint(0, 200)
    parts.append(data[pos:])
    return b"".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--size", default="2G", help="total bytes, e.g. 2G, 500M (default 2G)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    total = parse_size(args.size)
    if total < 8 * MiB:
        sys.exit("--size must be at least 8M")
    if os.path.exists(args.dir) and os.listdir(args.dir):
        sys.exit(f"{args.dir} is not empty: give a new or empty directory")
    os.makedirs(args.dir, exist_ok=True)
    rng = random.Random(args.seed)
    written = {"text": 0, "json": 0, "random": 0, "duplicate": 0, "small": 0}
    files = 0
    originals = []  # paths of earlier large files, for duplicates

    def write(rel, data, kind):
        nonlocal files
        p = os.path.join(args.dir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        written[kind] += len(data)
        files += 1
        return p

    # Small files and empty files first.
    for i in range(2000):
        d = f"small/{i % 17:02d}/{i % 5}"
        gen = rng.choice((text_block, json_block))
        write(f"{d}/f{i:04d}.txt", gen(rng, rng.randint(10, 4000)), "small")
    for i in range(5):
        write(f"empty/e{i}", b"", "small")

    plan = [("text", 0.35, text_block), ("json", 0.20, json_block), ("random", 0.25, random_block)]
    budget = total - written["small"]
    sizes = [4 << 10, 256 << 10, 1 * MiB, 8 * MiB, 32 * MiB, 64 * MiB]
    for kind, share, gen in plan:
        target, i = int(budget * share), 0
        while written[kind] < target:
            size = min(rng.choice(sizes), target - written[kind])
            p = write(f"{kind}/{i // 50:03d}/{kind}-{i:05d}.dat", gen(rng, size), kind)
            if size >= MiB:
                originals.append(p)
            i += 1
    target, i = total - sum(written.values()), 0
    while written["duplicate"] < target and originals:
        src = rng.choice(originals)
        with open(src, "rb") as f:
            data = f.read()
        data = data if rng.random() < 0.5 else edited_copy(rng, data)
        data = data[: max(0, target - written["duplicate"])]
        if not data:
            break
        write(f"copies/{i // 50:03d}/copy-{i:05d}.dat", data, "duplicate")
        i += 1
    print(json.dumps({"dir": args.dir, "files": files, "bytes": sum(written.values()), "by_kind": written,
                      "seed": args.seed}))


if __name__ == "__main__":
    main()
