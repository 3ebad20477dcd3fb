"""Whole-engine speed: one cold query stage by stage, photo embedding throughput, and levers.

    .venv/bin/python bench/engine_speed.py                      # CPU, default-random (~6-9 min)
    .venv/bin/python bench/engine_speed.py --quick              # skip the slow 512px ladder rows
    .venv/bin/python bench/engine_speed.py --device cuda --dtype fp16 --profile paper-random

Uses full-size random-weight twins of the real models (built on first use by
``retrieval.engine.build_models`` under $CLETIR_MODEL_DIR), loaded through the same code as
the real weights, so the costs are the real ones; image quality is not measured (random
weights make noise). A "cold" query is one whose proxies are not cached: text encoding with
the 80 templates, K proxies generated, embedded by the vision encoder, aggregated and fused.
Models are loaded once, before, as in a server process.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never touch the network
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from retrieval.engine.build_models import build_profile  # noqa: E402
from retrieval.engine.encoders import Encoders  # noqa: E402
from retrieval.engine.generator import ProxyGenerator  # noqa: E402
from retrieval.engine.model_folders import local_folder  # noqa: E402
from retrieval.engine.profiles import Profile  # noqa: E402
from retrieval.engine.runtime import get_profile  # noqa: E402

QUERIES = ["golden retriever", "a sailboat at sea", "Persian cat", "red double-decker bus",
           "a bowl of ramen", "snowy mountain peak", "tabby kitten", "vintage typewriter"]
DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class Clock:
    """Wall-clock timer that waits for queued CUDA work, so GPU stages are timed honestly."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def time(self, fn: Callable[[], object]) -> tuple[float, object]:
        t0 = self.now()
        out = fn()
        return self.now() - t0, out


class StageTimer:
    """Accumulates time spent in pipeline sub-modules through forward hooks."""

    def __init__(self, clock: Clock, modules: dict[str, torch.nn.Module]) -> None:
        self.clock, self.totals, self._start, self._hooks = clock, dict.fromkeys(modules, 0.0), {}, []
        for name, module in modules.items():
            self._hooks.append(module.register_forward_pre_hook(lambda m, a, n=name: self._begin(n)))
            self._hooks.append(module.register_forward_hook(lambda m, a, o, n=name: self._end(n)))

    def _begin(self, name: str) -> None:
        self._start[name] = self.clock.now()

    def _end(self, name: str) -> None:
        self.totals[name] += self.clock.now() - self._start.pop(name)

    def reset(self) -> None:
        self.totals = dict.fromkeys(self.totals, 0.0)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def gen_modules(gen: ProxyGenerator) -> dict[str, torch.nn.Module]:
    return {"prompt encoding": gen.pipe.text_encoder, "denoising (UNet)": gen.pipe.unet, "decoding": gen.pipe.vae.decoder}


def variant(gen: ProxyGenerator, decoder_module: torch.nn.Module | None = None, **changes) -> ProxyGenerator:
    """The same loaded pipeline with other profile settings (and optionally another decoder),
    sharing weights: no reload. diffusers' from_pipe shares every component."""
    other = copy.copy(gen)
    other.profile = dataclasses.replace(gen.profile, **changes)
    if decoder_module is not None:
        other.pipe = type(gen.pipe).from_pipe(gen.pipe, vae=decoder_module)
        other.pipe.set_progress_bar_config(disable=True)
    return other


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Photo-sized (640x480) smooth random images; content does not change the cost."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 60, 80, 3), dtype=np.uint8)
    return [Image.fromarray(a).resize((640, 480), Image.BILINEAR) for a in small]


def fmt_s(x: float) -> str:
    return f"{x:.2f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    text = "\n".join(lines)
    print(f"\n### {title}\n\n{text}\n", flush=True)
    return f"### {title}\n\n{text}\n"


def cold_query(enc: Encoders, gen: ProxyGenerator, timer: StageTimer, clock: Clock, query: str,
               seeds: list[int], net) -> dict[str, float]:
    """One uncached query, stage by stage (seconds)."""
    from retrieval.engine.aggregator import aggregate, fusion_lambda
    from retrieval.engine.fusion import query_vector

    timer.reset()
    t_text, text = clock.time(lambda: enc.encode_text([query]))
    t_gen, images = clock.time(lambda: gen.generate(query, seeds))
    t_vis, proxies = clock.time(lambda: enc.encode_vision_images(images))
    t_agg, _ = clock.time(lambda: query_vector(text[0], aggregate(proxies, net), fusion_lambda(net, 0.5)))
    stages = {"text (80 templates)": t_text, **{f"  {k}": v for k, v in timer.totals.items()}}
    stages["  other (scheduler, to PIL)"] = t_gen - sum(timer.totals.values())
    stages[f"generation, K={len(seeds)}, one call"] = t_gen
    stages["proxy vision embedding"] = t_vis
    stages["aggregation + fusion"] = t_agg
    stages["total"] = t_text + t_gen + t_vis + t_agg
    return stages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default-random")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the profile's choice)")
    ap.add_argument("--dtype", default="auto", choices=DTYPES, help="generator dtype")
    ap.add_argument("--encoder-dtype", default="auto", choices=DTYPES)
    ap.add_argument("--k", type=int, default=None, help="proxies per query (default: the profile's K)")
    ap.add_argument("--queries", type=int, default=3, help="timed cold queries (median reported)")
    ap.add_argument("--photos", type=int, default=64, help="photos for the throughput test")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="skip the slow 512px lever rows")
    ap.add_argument("--no-levers", action="store_true")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    profile: Profile = get_profile(args.profile)
    # "auto" keeps the profile's own policy (which is itself "auto" for the real profiles).
    profile = dataclasses.replace(
        profile, device=args.device or profile.device, k=args.k or profile.k,
        generator_dtype=profile.generator_dtype if args.dtype == "auto" else DTYPES[args.dtype],
        encoder_dtype=profile.encoder_dtype if args.encoder_dtype == "auto" else DTYPES[args.encoder_dtype],
    )
    if profile.random_weights:
        t0 = time.perf_counter()
        build_profile(profile.name, log=lambda m: print(m, flush=True))
        print(f"models ready in {time.perf_counter() - t0:.1f}s", flush=True)

    t_enc, enc = time.perf_counter(), Encoders(profile, profile.device)
    t_enc = time.perf_counter() - t_enc
    t_gen, gen = time.perf_counter(), ProxyGenerator(profile, profile.device)
    t_gen = time.perf_counter() - t_gen
    device, clock = enc.device, Clock(enc.device)
    # One-time kernel setup, paid at worker start (what Encoders/ProxyGenerator.warmup are for).
    t_warm, _ = clock.time(lambda: (enc.warmup(), gen.warmup()))
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else "?"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    print(f"\nprofile {profile.name} on {device} ({card}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, encoders {enc.dtype}, generator {gen.dtype}, "
          f"K={profile.k}, proxy {profile.proxy_size}px, {profile.steps} step(s), decoder {profile.decoder or 'full VAE'}; "
          f"load avg {os.getloadavg()[0]:.1f}", flush=True)

    try:
        from retrieval.engine.aggregator import AggregatorNet

        torch.manual_seed(0)
        net = AggregatorNet(enc.vision_dim).to(device).eval()  # untrained: cost only
    except ImportError:
        net = None
    report = []

    # ------------------------------------------------------------------ cold query
    timer = StageTimer(clock, gen_modules(gen))
    seeds = lambda i: list(range(1000 * i, 1000 * i + profile.k))  # noqa: E731
    first = cold_query(enc, gen, timer, clock, QUERIES[0], seeds(0), net)
    runs = [cold_query(enc, gen, timer, clock, QUERIES[1 + i % 7], seeds(1 + i), net) for i in range(args.queries)]
    timer.close()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    report.append(print_table(
        f"Cold query ({profile.name}, {device} {card}, K={profile.k}, {profile.proxy_size}px, "
        f"{profile.steps} step, {profile.decoder and 'taesd' or 'full VAE'}, generator {str(gen.dtype)[6:]}, "
        f"encoders {str(enc.dtype)[6:]})",
        ["stage", f"median of {len(runs)} (s)", "first query after warm-up (s)"],
        [[k, fmt_s(med[k]), fmt_s(first[k])] for k in med]
        + [["model load, once per process (encoders / generator)", f"{t_enc:.1f} / {t_gen:.1f}", ""],
           ["warm-up at worker start (warmup())", f"{t_warm:.1f}", ""]],
    ))

    # ------------------------------------------------------------------ photo throughput
    pics = photos(args.photos)
    enc.encode_vlm_images(pics[:4]), enc.encode_vision_images(pics[:4])  # warm-up
    t_vlm, vlm_vecs = clock.time(lambda: enc.encode_vlm_images(pics))
    t_vis, vis_vecs = clock.time(lambda: enc.encode_vision_images(pics))
    rows = [[f"VLM image ({enc.vlm_id})", f"{len(pics) / t_vlm:.1f}"],
            [f"vision ({profile.vision})", f"{len(pics) / t_vis:.1f}"],
            ["both (one stored photo vector)", f"{len(pics) / (t_vlm + t_vis):.1f}"]]
    throughput = len(pics) / (t_vlm + t_vis)

    lever_rows: list[list[str]] = []
    if not args.no_levers:
        # Encoder precision: speed and what it does to the vectors (fp32 is the reference).
        if device.type == "cpu":
            other = "float32" if enc.dtype != torch.float32 else "bfloat16"
            alt = Encoders(dataclasses.replace(profile, encoder_dtype=other), profile.device)
            alt.warmup()
            a_vlm, alt_vlm = clock.time(lambda: alt.encode_vlm_images(pics))
            a_vis, alt_vis = clock.time(lambda: alt.encode_vision_images(pics))
            rows.append([f"both, encoders in {other}", f"{len(pics) / (a_vlm + a_vis):.1f}"])
            t_q, _ = clock.time(lambda: enc.encode_text(["a tabby kitten"]))
            a_q, _ = clock.time(lambda: alt.encode_text(["a tabby kitten"]))
            this = str(enc.dtype)[6:]
            (f32, bf), (tq32, tqbf) = ((a_vlm + a_vis, t_vlm + t_vis), (a_q, t_q)) if other == "float32" else \
                ((t_vlm + t_vis, a_vlm + a_vis), (t_q, a_q))
            cos_vlm = float(np.min(np.sum(alt_vlm * vlm_vecs, axis=1)))
            cos_vis = float(np.min(np.sum(alt_vis * vis_vecs, axis=1)))
            lever_rows.append([f"encoders float32 -> bfloat16 (photo embedding; profile: {this})",
                               f"{len(pics) / f32:.1f} -> {len(pics) / bf:.1f} photos/s", f"x{f32 / bf:.2f}",
                               f"min cosine bf16 vs fp32: VLM {cos_vlm:.4f}, vision {cos_vis:.4f}"])
            lever_rows.append(["encoders float32 -> bfloat16 (query text, 80 templates)",
                               f"{tq32:.2f} -> {tqbf:.2f} s", f"x{tq32 / tqbf:.2f}", ""])
            del alt
        # Text: truncation to the longest prompt vs open_clip's full 77-token pass.
        q = ["a photo of a golden retriever"]
        enc.encode_text(q)
        t_cut, cut = clock.time(lambda: enc.encode_text(q))
        full_enc = copy.copy(enc)
        full_enc._has_clip_text = lambda: False
        t_full, full = clock.time(lambda: full_enc.encode_text(q))
        lever_rows.append(["text: cut prompts at end-of-text vs full 77 tokens (80 templates)",
                           f"{t_full:.2f} -> {t_cut:.2f} s", f"x{t_full / t_cut:.1f}",
                           f"same vectors (max diff {np.abs(cut - full).max():.1e})"])

    rows_t = print_table(f"Photo embedding throughput ({device} {card}, 640x480 photos, batch {profile.batch_size}, "
                         f"encoders {str(enc.dtype)[6:]})", ["encoder", "photos/s"], rows)
    report.append(rows_t)

    # ------------------------------------------------------------------ generation levers
    gen_rows: list[list[str]] = []
    if not args.no_levers:
        gen_rows = generation_ladder(args, profile, gen, clock, med, lever_rows)
    if lever_rows:
        report.append(print_table("Levers", ["lever", "before -> after", "gain", "note"], lever_rows))
    if gen_rows:
        report.append(print_table(
            f"Generation of K={profile.k} proxies, cumulative ladder ({device} {card})",
            ["configuration", "generation (s)", "cold query est. (s)", "vs naive"], gen_rows))

    summary = [[f"cold query, K={profile.k} ({profile.proxy_size}px, {profile.steps} step, "
                f"{profile.decoder and 'taesd' or 'VAE'}, {str(gen.dtype)[6:]})", f"{med['total']:.2f} s"],
               ["  of which generation", f"{med[f'generation, K={profile.k}, one call']:.2f} s"],
               ["  of which text (80 templates)", f"{med['text (80 templates)']:.2f} s"],
               ["photo embedding (VLM image + vision)", f"{throughput:.1f} photos/s"]]
    print("\n## Summary (paste into the README)\n")
    print(f"Device: {device} ({card}), profile `{profile.name}`, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads.\n")
    print_table("Engine speed", ["measure", "value"], summary)
    if gen_rows:
        print_table("Levers (generation)", ["configuration", "generation (s)", "cold query est. (s)", "vs naive"], gen_rows)
    if lever_rows:
        print_table("Levers (other)", ["lever", "before -> after", "gain", "note"], lever_rows)
    return 0


def generation_ladder(args, profile: Profile, gen: ProxyGenerator, clock: Clock, med: dict[str, float],
                      lever_rows: list[list[str]]) -> list[list[str]]:
    """Generation time per configuration, from the naive path to the profile's settings."""
    from diffusers import AutoencoderTiny

    k = profile.k
    seeds = list(range(7000, 7000 + k))
    rest = med["total"] - med[f"generation, K={k}, one call"]  # text + vision + aggregation
    rows: list[list[str]] = []
    naive_t: list[float] = []

    def row(label: str, g: ProxyGenerator, per_seed: bool = False) -> float:
        query = QUERIES[len(rows) % len(QUERIES)]
        if per_seed:
            fn = lambda: [g.generate(query, [s]) for s in seeds]  # noqa: E731
        else:
            fn = lambda: g.generate(query, seeds)  # noqa: E731
        # Cheap rows take the best of 2 runs: this machine's cores are shared, noise is large.
        repeat = 1 if per_seed or g.profile.proxy_size >= 512 else 2
        t = min(clock.time(fn)[0] for _ in range(repeat))
        if not naive_t:
            naive_t.append(t)
        rows.append([label, fmt_s(t), fmt_s(t + rest), f"x{naive_t[0] / t:.1f}"])
        print(f"  {label}: {t:.2f}s", flush=True)
        return t

    cpu = gen.device.type == "cpu"
    slow = profile.proxy_size < 512 and not args.quick
    base_dtype = "float32" if cpu else "float16"
    if slow or not cpu:
        # The naive path: full precision (fp16 on GPU), 512px, full VAE, one call per seed.
        ref = ProxyGenerator(dataclasses.replace(profile, generator_dtype=base_dtype, decoder=None), profile.device)
        r512 = variant(ref, proxy_size=512)
        row(f"naive: {base_dtype}, 512px, full VAE, {k} calls (one per seed)", r512, per_seed=True)
        row("+ one batched call", r512)
        if profile.decoder:
            folder = local_folder(profile.decoder)
            source = str(folder) if folder.is_dir() else profile.decoder
            tiny = AutoencoderTiny.from_pretrained(source, dtype=ref.dtype).to(ref.device)
            row("+ taesd decoder", variant(ref, decoder_module=tiny, proxy_size=512, decoder=profile.decoder))
        del ref, r512
    # From here: the loaded generator (profile dtype and decoder), size and steps varied.
    label0 = f"+ {str(gen.dtype)[6:]}, {profile.decoder and 'taesd' or 'full VAE'}"
    sizes = sorted({s for s in (512, 384, 320, 256) if s > profile.proxy_size} | {profile.proxy_size}, reverse=True)
    if args.quick:
        sizes = [s for s in sizes if s < 512]
    for i, size in enumerate(sizes):
        label = (label0 + f", {size}px") if i == 0 else f"+ {size}px"
        if size == profile.proxy_size:
            label += " (profile setting)"
        row(label, variant(gen, proxy_size=size))
    base = float(rows[-1][1])
    if profile.steps < 4:
        t2 = row(f"(side) {profile.steps + 1} steps instead of {profile.steps}", variant(gen, steps=profile.steps + 1))
        lever_rows.append([f"steps {profile.steps} -> {profile.steps + 1}", f"{base:.2f} -> {t2:.2f} s",
                           f"x{base / t2:.2f}", "each step is one more UNet pass"])
    if cpu and torch.get_num_threads() > 1:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t1 = row("(side) 1 torch thread", gen)
        finally:
            torch.set_num_threads(n)
        lever_rows.append([f"torch threads 1 -> {n}", f"{t1:.2f} -> {base:.2f} s", f"x{t1 / base:.2f}",
                           "torch default = physical cores; on a box shared with busy processes fewer can win (CLETIR_TORCH_THREADS)"])
    t_seed = row("(side) profile setting, one call per seed", gen, per_seed=True)
    lever_rows.append([f"one batched call vs {k} per-seed calls (profile setting)", f"{t_seed:.2f} -> {base:.2f} s",
                       f"x{t_seed / base:.2f}", "prompt encoded once; larger matmuls"])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
