"""Fine-tuning evaluation: the in-distribution accuracy a trained encoder reaches when labels may change it,
beside the linear probe on its frozen features. An evaluation only, not part of the grade.

The course forbids labels in training the submitted encoder: everything here works on a deep copy of the encoder
and writes no weights file, so the submitted weights and the model passed in stay bit-for-bit unchanged
(tests/test_finetune.py checks it). The fine-tuned copy is thrown away.

Both accuracies are on the ID classes (fit on train, scored on val):
- linear probe: the grader's logistic regression on the frozen get_features (probes.linear_accuracy, fast=True:
  the same objective, minimised in torch);
- fine-tuned: a linear head on get_features, trained with the copy of the encoder on the training labels.
The gap says how much of what the labels can teach the network its self-supervised features already expose
linearly. It says nothing about the OOD classes, half of the grade.

Recipe (fixed, not tuned): one 64-px view per image and epoch, a random resized crop of at least 35% of the image
(weaker than the self-supervised views' 20%: the labels say what matters, and a few epochs leave no time to learn
invariances the hard way), a flip, colour jitter on half the images; cross-entropy; AdamW with a 10x smaller
learning rate for the encoder than for the new head (the head starts from random, the encoder from useful weights
that a large step would destroy), weight decay 0.05 on weights only (utils.optim.decays), warmup over the first
10% of the steps, then a cosine to zero.

    python -m utils.finetune --weights final_model.safetensors --data-dir DIR [--epochs 5] [--out DIR]

prints the two accuracies and writes finetune.json and the fine-tuned model's confusion figure into --out.
In Python: `finetune_evaluation(model, splits["train"], splits["val"])`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils import augment, optim, probes
from utils.data import Split, spread_rows, to_device
from utils.device import pick_device
from utils.progress import progress_bar

NOT_GRADED = ("Evaluation only, not graded: a fine-tuned copy of the encoder, thrown away afterwards. The course "
              "forbids labels in training the submitted encoder; its weights were not changed.")

# One global view per image: a weaker crop than the self-supervised views (module docstring says why).
FINETUNE_VIEW = augment.ViewConfig(size=64, crop_scale=(0.35, 1.0), jitter_p=0.5, gray_p=0.0, blur_p=0.0,
                                   solarize_p=0.0)


@dataclass
class FinetuneConfig:
    """Settings of the fine-tuning evaluation (the recipe is in the module docstring)."""
    epochs: int = 5
    batch_size: int = 256
    lr_head: float = 1e-3
    lr_encoder: float = 1e-4            # smaller than lr_head: the encoder starts from trained weights
    weight_decay: float = 0.05
    warmup: float = 0.1                 # fraction of the steps
    max_train_images: int = 0           # 0 = all; else this many, spread over the set (files sorted by class)
    probe_max_iter: int = 1000          # L-BFGS iterations of the linear probe (the grader's 1000)
    precision: str = "auto"             # "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp32"
    seed: int = 0

    def __post_init__(self):
        checks = [(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
                  (self.lr_head > 0 and self.lr_encoder >= 0,
                   f"lr_head must be > 0 and lr_encoder >= 0, got {self.lr_head} and {self.lr_encoder}"),
                  (0 <= self.warmup < 1, f"warmup is a fraction of the steps in [0, 1), got {self.warmup}"),
                  (self.precision in ("auto", "bf16", "fp32"),
                   f"precision must be auto, bf16 or fp32, got {self.precision!r}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"FinetuneConfig: {message}")


@dataclass
class FinetuneResult:
    """ID val accuracies in percent, the fine-tuned model's val predictions (class ids), per-epoch history."""
    linear_probe: float
    finetuned: float
    val_predictions: np.ndarray
    history: list = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    figure: str | None = None             # path of the saved confusion figure
    confusion: object = None              # the confusion figure itself (matplotlib Figure), to show in a notebook

    def as_dict(self) -> dict:
        return {"id_val_accuracy": {"linear_probe": self.linear_probe, "finetuned": self.finetuned},
                "steps": self.steps, "seconds": round(self.seconds, 1), "history": self.history,
                "figure": self.figure, "note": NOT_GRADED}


class Classifier(torch.nn.Module):
    """The encoder's graded features followed by a linear head: (B, 3, 64, 64) in [0, 1] -> (B, C) logits."""

    def __init__(self, encoder: torch.nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.get_features(x))


def finetune_copy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, cfg: FinetuneConfig, *,
                  device=None, progress: bool = False) -> tuple[Classifier, np.ndarray, list]:
    """Fine-tune a deep copy of `model` with a new linear head on (images uint8 (N, 64, 64, 3), labels (N,)).

    Returns (classifier in eval mode: copy + head, classes (C,) sorted label ids that the head's outputs stand
    for, history [{"epoch", "loss", "train_accuracy"}]). `model` itself is never modified. The projector is not
    trained (the head reads get_features, which does not use it). Global random generators are not touched:
    every draw comes from generators seeded with cfg.seed."""
    device = pick_device(device)
    classes = np.unique(labels)
    targets = torch.as_tensor(np.searchsorted(classes, labels), device=device)
    encoder = copy.deepcopy(model).to(device).train()
    with torch.random.fork_rng(devices=[]):        # the head's initialisation, without moving the caller's RNG
        torch.manual_seed(cfg.seed)
        classifier = Classifier(encoder, len(classes)).to(device)

    # Two learning rates through utils.optim's lr_scale (set_lr below): the head at lr_head, the encoder at
    # lr_encoder. Weight decay on weights only (utils.optim.decays).
    groups = {}                                     # (lr_scale, weight_decay) -> parameters
    for name, p in classifier.named_parameters():
        if name.startswith("encoder.projector."):
            p.requires_grad_(False)                 # get_features does not use it
            continue
        lr_scale = 1.0 if name.startswith("head.") else cfg.lr_encoder / cfg.lr_head
        weight_decay = cfg.weight_decay if optim.decays(name, p) else 0.0
        groups.setdefault((lr_scale, weight_decay), []).append(p)
    optimizer = torch.optim.AdamW([{"params": params, "lr_scale": lr_scale, "weight_decay": weight_decay}
                                   for (lr_scale, weight_decay), params in groups.items()],
                                  lr=cfg.lr_head, fused=device.type == "cuda")

    images_on_device = to_device(images, device)
    batch_size = min(cfg.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size
    total_steps = cfg.epochs * steps_per_epoch
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    history, step = [], 0
    bar = progress_bar(total=total_steps, desc="fine-tune", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            optim.set_lr(optimizer, cfg.lr_head * optim.lr_factor(step / total_steps, cfg.warmup))
            index = order[i * batch_size:(i + 1) * batch_size]
            view = augment.make_view(images_on_device[index], FINETUNE_VIEW, generator=generator)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = classifier(view)
            loss = F.cross_entropy(logits.float(), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()     # summed on the device: no host sync per step
            correct += (logits.argmax(dim=1) == targets[index]).sum()
            step += 1
            bar.update(1)
        history.append({"epoch": epoch + 1, "loss": round(float(loss_sum) / steps_per_epoch, 5),
                        "train_accuracy": round(100.0 * float(correct) / (steps_per_epoch * batch_size), 2)})
    bar.close()
    return classifier.eval(), classes, history


@torch.no_grad()
def predict(classifier: Classifier, images: np.ndarray, classes: np.ndarray, *, device=None) -> np.ndarray:
    """Class ids (N,) predicted for uint8 images (N, 64, 64, 3): features as the grader computes them
    (probes.encode_images: ToTensor, eval mode, float32), then the head."""
    features = probes.encode_images(classifier.encoder, images, device=device)
    head = classifier.head.float()
    logits = features.to(head.weight.device) @ head.weight.T + head.bias
    return classes[logits.argmax(dim=1).cpu().numpy()]


def finetune_evaluation(model: torch.nn.Module, train: Split, val: Split, cfg: FinetuneConfig | None = None, *,
                        device=None, figure_dir=None, progress: bool = False) -> FinetuneResult:
    """ID val accuracy (percent) of the linear probe on `model`'s frozen features and of a fine-tuned copy of it,
    and (when figure_dir is given) the fine-tuned copy's confusion figure (plots.plot_confusion_top) saved there
    as finetune_confusion.png. An evaluation only: `model` is not changed (see the module docstring).

    model: a trained ImageEncoder whose get_features can run (feature statistics fitted, when its design needs
    them). train, val: ID splits (utils.data.Split)."""
    cfg = cfg or FinetuneConfig()
    device = pick_device(device)
    start = time.perf_counter()
    rows = spread_rows(len(train), cfg.max_train_images)
    train_images, train_labels = train.images[rows], train.labels[rows]

    train_f = probes.encode_images(model, train_images, device=device, progress=progress)
    val_f = probes.encode_images(model, val.images, device=device, progress=progress)
    linear = probes.linear_accuracy(train_f, train_labels, val_f, val.labels, fast=True,
                                    max_iter=cfg.probe_max_iter, device=device)

    classifier, classes, history = finetune_copy(model, train_images, train_labels, cfg, device=device,
                                                 progress=progress)
    predictions = predict(classifier, val.images, classes, device=device)
    finetuned = 100.0 * float(np.mean(predictions == val.labels))
    figure = fig = None
    if figure_dir is not None:
        from utils import plots   # matplotlib: only when a figure is asked for
        fig = plots.plot_confusion_top(val.labels, predictions, val.class_names, k=10)
        fig.axes[0].set_title("Fine-tuned copy (evaluation only): confusions among the most confused ID classes",
                              fontsize=fig.axes[0].title.get_fontsize())
        figure = str(plots.save_figure(fig, figure_dir, "finetune_confusion.png"))
    steps = cfg.epochs * (len(train_images) // min(cfg.batch_size, len(train_images)))
    return FinetuneResult(linear, finetuned, predictions, history, steps=steps,
                          seconds=time.perf_counter() - start, figure=figure, confusion=fig)


def main(argv: list[str] | None = None) -> int:
    from models import ImageEncoder
    from utils.checkpoint import CheckpointError, load_network_weights, weights_arch
    from utils.data import DataError, data_dir_help, load_splits, resolve_data_dir
    from utils.features import fit_feature_statistics
    from utils.provenance import provenance

    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(
        description="Fine-tuning evaluation (not graded): ID val accuracy of a fine-tuned copy of the encoder beside "
                    "the linear probe on its frozen features. The weights file is only read: the course forbids "
                    "labels in training the submitted encoder.")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors file of a trained encoder")
    parser.add_argument("--data-dir", default=None, help=f"folder holding train.npz and val.npz (default: "
                        f"{data_dir_help()})")
    parser.add_argument("--arch", default=None, help="architecture (default: the file's metadata, else models.ARCH)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr-head", type=float, default=defaults.lr_head)
    parser.add_argument("--lr-encoder", type=float, default=defaults.lr_encoder)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--max-train-images", type=int, default=0, help="0: all training images")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the GPU when there is one)")
    parser.add_argument("--out", type=Path, default=Path("finetune_output"),
                        help="folder for finetune.json and finetune_confusion.png (default ./finetune_output)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr_head=args.lr_head,
                             lr_encoder=args.lr_encoder, weight_decay=args.weight_decay,
                             max_train_images=args.max_train_images, seed=args.seed)
        model = load_network_weights(ImageEncoder(weights_arch(args.weights, args.arch)), args.weights)
        data_dir = resolve_data_dir(args.data_dir)
        splits = load_splits(data_dir, splits=("train", "val"))
    except (CheckpointError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    device = pick_device(args.device)
    model = model.to(device)
    if model.needs_feature_statistics and not bool(model.feature_statistics_fitted):
        # a file made before the design needed them: fitted in memory only, the file is not written
        fit_feature_statistics(model, splits["train"].images, device=device)
    result = finetune_evaluation(model, splits["train"], splits["val"], cfg, device=device, figure_dir=args.out,
                                 progress=not args.no_progress)
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    print(f"ID val accuracy ({len(splits['val'])} images, {len(np.unique(splits['val'].labels))} classes):\n"
          f"  linear probe on the frozen features: {result.linear_probe:6.2f}%\n"
          f"  fine-tuned copy ({epochs}):{' ' * (18 - len(epochs))}{result.finetuned:6.2f}%\n"
          f"{NOT_GRADED}")
    record = {**provenance(device), "weights": str(args.weights), "arch": model.arch, "data_dir": str(data_dir),
              "n_train": len(spread_rows(len(splits["train"]), cfg.max_train_images)), "n_val": len(splits["val"]),
              "settings": dataclasses.asdict(cfg), **result.as_dict()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'finetune.json'} and {result.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
