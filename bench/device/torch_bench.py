#!/usr/bin/env python3
"""PyTorch peer of bench/cuda.ts on the same GPU and the same weights, and the comparison table.

Reads what bench/cuda.ts exported into DIR (<model>.safetensors with the deployed weights, <model>.layers.json with
the layer list, <model>.input.npy, our and the CPU backend's logits for that input), builds the deployed RepVGG in
PyTorch (3x3 conv + bias + ReLU per layer, global average pool, linear), checks its logits against ours, then times
it like ours is timed: device time per forward with CUDA events, input already on the GPU, median of many runs
after warm-up, on random (never zero) input. fp32 runs with TF32 off (as ours: FMA math only) unless --tf32;
fp16 runs channels_last (NHWC, as ours). cudnn.benchmark is on; each configuration is timed eager and replayed
as a CUDA graph. Finally merges DIR/ours.json and prints the table (markdown) last.

Usage: python3 bench/device/torch_bench.py --dir DIR [--models A0,...] [--batches 1,32,128] [--precisions fp32,fp16]
       [--seconds 1] [--out DIR/torch.json] [--tf32]
Not for: correctness of our backend (test/cuda.test.ts) or running without a GPU (it exits 2 then).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    """A minimal safetensors reader (float32 only): name -> numpy array. Used when the safetensors package is absent."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        count = (end - start) // 4
        tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=base + start).reshape(info["shape"])
    return tensors


def load_weights(path):
    try:
        from safetensors.numpy import load_file  # type: ignore

        return load_file(path)
    except ImportError:
        return read_safetensors(path)


def max_relative_error(ours, ref):
    ours = np.asarray(ours, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    diff = np.abs(ours - ref)
    if not np.all(np.isfinite(diff)):
        return float("inf")
    return float(diff.max() / max(np.abs(ref).max(), 1e-30))


def build_model(torch, layout, tensors):
    nn = torch.nn
    modules = []
    for layer in layout["layers"]:
        if layer.get("se"):
            raise NotImplementedError("SE variants are not benchmarked here")
        conv = nn.Conv2d(layer["inChannels"], layer["outChannels"], 3, stride=layer["stride"], padding=1,
                         groups=layer["groups"], bias=True)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.array(tensors[f"{layer['name']}.rbr_reparam.weight"])))
            conv.bias.copy_(torch.from_numpy(np.array(tensors[f"{layer['name']}.rbr_reparam.bias"])))
        modules += [conv, nn.ReLU(inplace=True)]
    linear = nn.Linear(layout["features"], layout["numClasses"])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.array(tensors["linear.weight"])))
        linear.bias.copy_(torch.from_numpy(np.array(tensors["linear.bias"])))
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear]
    return nn.Sequential(*modules).eval()


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def device_ms(torch, fn, seconds):
    """Median device time of fn() with CUDA events around each call, sized to about `seconds` after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 3, 0.01)
    iterations = max(5, min(300, round(seconds * 1000 / estimate)))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iterations)]
    for s, e in events:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return median([s.elapsed_time(e) for s, e in events]), iterations


def graphed(torch, model, static_input):
    """A CUDA graph of model(static_input), captured after warm-up on a side stream (PyTorch's documented recipe)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            model(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(static_input)
    return graph.replay


def prepare(torch, model, x, precision):
    if precision == "fp16":
        model = model.half().to(memory_format=torch.channels_last)
        x = x.half().contiguous(memory_format=torch.channels_last)
    return model, x


def run_torch(args, torch):
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "cudnn": torch.backends.cudnn.version(), "tf32": args.tf32, "models": []}
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    for name in args.models:
        layout_path = os.path.join(args.dir, f"{name}.layers.json")
        if not os.path.exists(layout_path):
            print(f"torch_bench: {name}: {layout_path} missing (did bench/cuda.ts run?)", file=sys.stderr)
            continue
        with open(layout_path) as f:
            layout = json.load(f)
        tensors = load_weights(os.path.join(args.dir, f"{name}.safetensors"))
        entry = {"model": name, "checks": {}, "timings": []}
        check_input = torch.from_numpy(np.load(os.path.join(args.dir, f"{name}.input.npy"))).cuda()
        reference = None
        for precision in args.precisions:
            model = build_model(torch, layout, tensors).cuda()
            model, x = prepare(torch, model, check_input, precision)
            with torch.inference_mode():
                logits = model(x).float().cpu().numpy()
            if precision == "fp32":
                reference = logits
            check = {}
            for other in ("ours_" + precision, "cpu_logits"):
                path = os.path.join(args.dir, f"{name}.{other}.npy")
                if os.path.exists(path):
                    check[f"maxRelativeErrorVs_{other}"] = max_relative_error(np.load(path), logits)
            if reference is not None and precision != "fp32":
                check["maxRelativeErrorVsTorchFp32"] = max_relative_error(logits, reference)
            entry["checks"][precision] = check
            print(f"torch_bench: {name} {precision} check: {check}", file=sys.stderr)
            for batch in args.batches:
                generator = torch.Generator(device="cuda").manual_seed(1000 + batch)
                data = torch.rand((batch, 3, 224, 224), generator=generator, device="cuda") * 2 - 1  # never all zero
                m, xb = prepare(torch, model, data, precision)
                timing = {"precision": precision, "batch": batch}
                try:
                    with torch.inference_mode():
                        ms, runs = device_ms(torch, lambda: m(xb), args.seconds)
                    timing["eager"] = {"medianMs": ms, "imagesPerSecond": batch * 1000 / ms, "runs": runs}
                    replay = graphed(torch, m, xb.clone())
                    ms, runs = device_ms(torch, replay, args.seconds)
                    timing["graph"] = {"medianMs": ms, "imagesPerSecond": batch * 1000 / ms, "runs": runs}
                except Exception as err:  # keep going: one failed configuration must not lose the others
                    timing["error"] = repr(err)
                print(f"torch_bench: {name} {precision} batch {batch}: {timing}", file=sys.stderr)
                entry["timings"].append(timing)
                torch.cuda.empty_cache()
            del model
        results["models"].append(entry)
    return results


def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def ips(entry, key):
    value = entry.get(key) if isinstance(entry, dict) else None
    return value.get("imagesPerSecond") if isinstance(value, dict) else None


def print_table(ours, torch_results):
    torch_rows = {}
    for entry in torch_results.get("models", []):
        for timing in entry["timings"]:
            torch_rows[(entry["model"], timing["precision"], timing["batch"])] = timing
    lines = [
        f"GPU: {torch_results.get('device', '?')}; PyTorch {torch_results.get('torch', '?')} (cuDNN {torch_results.get('cudnn', '?')}, "
        f"TF32 {'on' if torch_results.get('tf32') else 'off'}); ours: cuDNN {ours.get('cuda', {}).get('cudnnVersion', '?')}; "
        "224x224, img/s from the median device time per forward",
        "",
        "| model | prec | batch | ours eager | ours graph | torch eager | torch graph | ours/torch eager | best/best | ours train-form | deploy/train | ours host-to-host |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in ours.get("results", []):
        model, precision = row["model"], row["precision"]
        if "batches" not in row:
            lines.append(f"| {model} | {precision} | - | FAILED: {row.get('error', '?')} |")
            continue
        for b in row["batches"]:
            batch = b["batch"]
            t = torch_rows.get((model, precision, batch), {})
            oe, og, te, tg = ips(b, "eager"), ips(b, "graph"), ips(t, "eager"), ips(t, "graph")
            tr, e2e = ips(b, "trainForm"), ips(b, "endToEnd")
            ratio = oe / te if oe and te else None
            best = max(filter(None, [oe, og]), default=None)
            tbest = max(filter(None, [te, tg]), default=None)
            best_ratio = best / tbest if best and tbest else None
            deploy_train = oe / tr if oe and tr else None
            note = f" ({b['error']})" if "error" in b else ""
            lines.append(
                f"| {model} | {precision} | {batch} | {fmt(oe)} | {fmt(og)} | {fmt(te)} | {fmt(tg)} | {fmt(ratio, 2)} | "
                f"{fmt(best_ratio, 2)} | {fmt(tr)} | {fmt(deploy_train, 2)} | {fmt(e2e)}{note} |"
            )
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--models", default="A0,A1,B0,B1g4,B3")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--out")
    parser.add_argument("--tf32", action="store_true", help="let PyTorch's fp32 convs use TF32 (its default); ours never does")
    parser.add_argument("--table-only", action="store_true", help="print the table from DIR/ours.json and DIR/torch.json")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.precisions = [p for p in args.precisions.split(",") if p]
    out = args.out or os.path.join(args.dir, "torch.json")

    ours_path = os.path.join(args.dir, "ours.json")
    ours = json.load(open(ours_path)) if os.path.exists(ours_path) else {}
    if args.table_only:
        torch_results = json.load(open(out)) if os.path.exists(out) else {}
        print_table(ours, torch_results)
        return 0
    try:
        import torch  # noqa: WPS433 (imported here so that --table-only works without it)
    except ImportError as err:
        print(f"torch_bench: SKIPPED: PyTorch is not installed ({err})")
        print_table(ours, {})
        return 2
    if not torch.cuda.is_available():
        print("torch_bench: SKIPPED: torch.cuda.is_available() is False")
        print_table(ours, {})
        return 2
    results = run_torch(args, torch)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"torch_bench: wrote {out}", file=sys.stderr)
    print_table(ours, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
