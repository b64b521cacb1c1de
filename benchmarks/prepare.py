"""``prepare`` throughput and memory on this machine, and the memory of streaming its shards.

    python benchmarks/prepare.py [--small 3] [--large 12] [--write]

Renders ``--large`` clips of held-out characters (about 8 s each) as MP4s, prepares the first
``--small`` of them and then all of them (fresh datasets), each in a fresh process, and reports
clips/minute and peak RSS: memory should not grow with the number of clips. Then it streams
batches from the large dataset with a 2-shard buffer and from the small one, reporting peak RSS
of each: the stream holds ``buffer`` shards, not the dataset.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
mode, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
t = time.perf_counter()
if mode == "prepare":
    from model.train.prepare import PrepareConfig, prepare
    s = prepare(args, out, "tiny", pc=PrepareConfig(shard_chunks=16))
    extra = {{"chunks": s["chunks"], "kept": s["clips_kept"]}}
else:
    from model.train.prepare import shard_paths
    from model.train.shards import ShardStream
    st = ShardStream(shard_paths(out), buffer=2)
    n = 0
    for _ in range(int(args[0])):
        n += len(st.next(8))
    extra = {{"chunks_streamed": n, "shards": len(st.paths)}}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"s": time.perf_counter() - t, "rss_mb": rss, **extra}}))
"""


def child(*args: str) -> dict:
    cmd = [sys.executable, "-c", CHILD.format(root=ROOT), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    from model.train.synth import make_clip, write_clip_video
    from stream.bench import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=3)
    ap.add_argument("--large", type=int, default=12)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="prepare_bench_")
    vids = [write_clip_video(make_clip(s, "test", sentences=(2, 2)), os.path.join(work, f"c{s}.mp4"))
            for s in range(a.large)]  # fmt: skip
    small = child("prepare", os.path.join(work, "small"), *vids[: a.small])
    large = child("prepare", os.path.join(work, "large"), *vids)
    s_small = child("stream", os.path.join(work, "small"), "200")
    s_large = child("stream", os.path.join(work, "large"), "200")
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "small": {**small, "clips": a.small, "clips_per_min": round(a.small / small["s"] * 60, 1)},
        "large": {**large, "clips": a.large, "clips_per_min": round(a.large / large["s"] * 60, 1)},
        "stream_small": s_small,
        "stream_large": s_large,
    }
    print(json.dumps(res, indent=1))
    if a.write:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write(
                f"\n## prepare: throughput and memory (issue 12)\n\n`python benchmarks/prepare.py --small {a.small} "
                f"--large {a.large}` ({res['date']}, {res['machine']}; 8-12 s clips of held-out characters, "
                "256 px):\n\n"
                "| clips | chunks | clips/min | peak RSS |\n| --- | --- | --- | --- |\n"
                f"| {a.small} | {small['chunks']} | {res['small']['clips_per_min']} | {small['rss_mb']:.0f} MB |\n"
                f"| {a.large} | {large['chunks']} | {res['large']['clips_per_min']} | {large['rss_mb']:.0f} MB |\n\n"
                f"Streaming 200 batches of 8 with a 2-shard buffer: peak RSS {s_small['rss_mb']:.0f} MB over "
                f"{s_small['shards']} shards, {s_large['rss_mb']:.0f} MB over {s_large['shards']} shards.\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
