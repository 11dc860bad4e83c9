"""Elman's (1990) experiments, reported: what a trained run learned, measured on a fresh stream and drawn.

    report(run, out)      the XOR error per position, the letters' error per letter, and for the sentences
                          the tree of the per-word mean hidden states (hierarchical clustering, the paper's
                          Fig. 7); figures as PNG and SVG under `out`
    cluster_words, top_split, tree_text   the clustering of the mean states, its root's two groups, the tree
                          drawn in box characters

What is computed (training, `evaluate`, the mean states) is in `experiments`; this module only reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from jaxtyping import Float

from rnnlab.teach.elman import data as elman
from rnnlab.teach.elman.experiments import Evaluation, SequenceRun, evaluate, mean_hidden_by_word

__all__ = ["cluster_words", "report", "top_split", "tree_text"]


def cluster_words(words: tuple[str, ...], means: Float[np.ndarray, "V p"], method: str = "ward") -> np.ndarray:
    """scipy's hierarchical clustering (linkage matrix) of the per-word mean hidden states (Euclidean)."""
    from scipy.cluster.hierarchy import linkage

    return linkage(means, method=method, metric="euclidean")


def top_split(words: tuple[str, ...], Z: np.ndarray) -> tuple[frozenset[str], frozenset[str]]:
    """The two groups of words the tree's root joins."""
    from scipy.cluster.hierarchy import to_tree

    root = to_tree(Z)
    return (
        frozenset(words[i] for i in root.get_left().pre_order()),
        frozenset(words[i] for i in root.get_right().pre_order()),
    )


def tree_text(words: tuple[str, ...], Z: np.ndarray, label: Callable[[str], str] | None = None) -> str:
    """The clustering tree drawn with box characters, leaves labelled by `label(word)` (default the word)."""
    from scipy.cluster.hierarchy import to_tree

    label = label or (lambda w: w)
    lines: list[str] = []

    def walk(node, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        if node.is_leaf():
            lines.append(prefix + branch + label(words[node.id]))
            return
        lines.append(prefix + branch + f"┐ {node.dist:.2f}")
        child_prefix = prefix + ("" if root else ("   " if last else "│  "))
        walk(node.get_left(), child_prefix, False, False)
        walk(node.get_right(), child_prefix, True, False)

    walk(to_tree(Z), "", True, True)
    return "\n".join(lines)


def _noun_verb(word: str) -> str:
    return "noun" if word in elman.NOUNS else "verb"


def _category(data: elman.ElmanData, word: str) -> str:
    return "/".join(data.categories.get(word, ()))


def _xor_report(ev: Evaluation, out: Path | None) -> tuple[dict, list[Path]]:
    pos = ev.data.position
    by_pos = [float(ev.error[pos == j].mean()) for j in range(3)]
    result = {"error_by_position": {"first bit": by_pos[0], "second bit": by_pos[1], "XOR bit": by_pos[2]}}
    lines = [
        f"  mean squared error predicting the first bit of a triple  {by_pos[0]:.3f}",
        f"                                   the second bit          {by_pos[1]:.3f}",
        f"                                   the XOR bit (every 3rd) {by_pos[2]:.3f}   <- the dip",
    ]
    result["text"] = "\n".join(lines)
    files: list[Path] = []
    if out is not None:
        import matplotlib.pyplot as plt

        starts = np.flatnonzero(pos == 0)
        starts = starts[starts + 12 <= ev.data.T]
        cycle = np.stack([ev.error[s : s + 12] for s in starts]).mean(0)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(np.arange(1, 13), cycle, marker="o", color="C0")
        for j in range(3, 13, 3):
            ax.axvline(j, color="0.85", zorder=0)
        ax.set_xticks(np.arange(1, 13), ["b1", "b2", "xor"] * 4)
        ax.set_xlabel("bit predicted (position in the stream, 4 triples)")
        ax.set_ylabel("squared error")
        ax.set_title(f"Temporal XOR: the error dips on every third bit\n(mean over {len(starts)} cycles)", fontsize=10)
        fig.tight_layout()
        files += _save(fig, out / "elman-xor")
    return result, files


def _letters_report(ev: Evaluation, out: Path | None) -> tuple[dict, list[Path]]:
    targets = np.array(ev.data.tokens[1:])
    by_letter = {s: float(ev.error[targets == s].mean()) for s in ev.data.vocab}
    consonant = float(ev.error[np.isin(targets, list(elman.SYLLABLES))].mean())
    is_consonant = np.isin(targets, list(elman.SYLLABLES))
    vowel = float(ev.error[~is_consonant].mean())
    # squared error of each feature where a consonant comes: "consonant" is predictable, "high"/"back" not
    y = ev.y[is_consonant]
    t = ev.data.targets[0][is_consonant]
    by_feature = {f: float(((y[:, j] - t[:, j]) ** 2).mean()) for j, f in enumerate(ev.data.features)}
    # the least possible: b, d, g equally likely, so "high" and "back" are each 1 with probability 1/3
    floor = {
        s: sum((np.mean([elman.LETTERS[c][j] for c in "bdg"]) - elman.LETTERS[s][j]) ** 2 for j in range(6))
        for s in "bdg"
    }
    result = {
        "error_by_letter": by_letter,
        "consonants": consonant,
        "vowels": vowel,
        "consonant_error_by_feature": by_feature,
        "least_possible_by_consonant": floor,
    }
    result["text"] = "\n".join(
        [
            f"  mean squared error predicting a consonant  {consonant:.3f}   (which of b, d, g is random; "
            f"the least possible is {np.mean(list(floor.values())):.3f})",
            f"                         predicting a vowel  {vowel:.3f}   (given by the consonant before it)",
            "  per letter: " + "  ".join(f"{s} {e:.3f}" for s, e in by_letter.items()),
            "  where a consonant comes, error per feature: "
            + "  ".join(f"{f} {e:.3f}" for f, e in by_feature.items())
            + "\n  (that a consonant comes is predicted; which one is not)",
        ]
    )
    files: list[Path] = []
    if out is not None:
        import matplotlib.pyplot as plt

        n = 24
        s = int(np.flatnonzero(ev.data.position == 0)[1])
        seg = ev.error[s : s + n]
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(np.arange(n), seg, marker="o", color="C0")
        ax.set_xticks(np.arange(n), list(targets[s : s + n]))
        for i, letter in enumerate(targets[s : s + n]):
            if letter in elman.SYLLABLES:
                ax.axvspan(i - 0.4, i + 0.4, color="C3", alpha=0.12, lw=0)
        ax.set_xlabel("letter predicted (consonants shaded)")
        ax.set_ylabel("squared error")
        ax.set_title("Letter sequences: error high on consonants, low on vowels")
        fig.tight_layout()
        files += _save(fig, out / "elman-letters")
    return result, files


def _sentences_report(ev: Evaluation, out: Path | None) -> tuple[dict, list[Path]]:
    data = ev.data
    best = elman.next_word_distribution(data)
    idx = np.arange(data.T), data.labels[0]
    bits = 1.0 / math.log(2)
    model_bits = float(ev.loss.mean() * bits)
    best_bits = float(-np.log2(best[idx]).mean())
    unigram = np.bincount(data.labels[0], minlength=data.q) / data.T
    unigram_bits = float(-np.log2(unigram[data.labels[0]]).mean())
    kl = float((best * (np.log2(best + 1e-12) - np.log2(ev.y + 1e-12))).sum(-1).mean())
    rms_model = float(np.sqrt(((ev.y - best) ** 2).sum(-1).mean()))
    words, means = mean_hidden_by_word(ev)
    Z = cluster_words(words, means)
    left, right = top_split(words, Z)
    nouns, verbs = set(elman.NOUNS) & set(words), set(elman.VERBS) & set(words)
    separates = {left, right} == {frozenset(nouns), frozenset(verbs)}
    result = {
        "model_bits_per_word": model_bits,
        "best_bits_per_word": best_bits,
        "unigram_bits_per_word": unigram_bits,
        "kl_bits_per_word": kl,
        "rms_to_best": rms_model,
        "top_split_nouns_verbs": separates,
        "top_split": (sorted(left), sorted(right)),
        "tree": tree_text(words, Z, lambda w: f"{w:<9} {_noun_verb(w)} {_category(data, w)}"),
    }
    result["text"] = "\n".join(
        [
            f"  cross-entropy of the next word, bits/word: model {model_bits:.3f}, "
            f"best possible {best_bits:.3f} "
            f"(the generator's own probabilities), word frequencies alone {unigram_bits:.3f}",
            f"  gap to the best possible: KL {kl:.3f} bits/word; RMS distance of y_t to the true "
            f"next-word distribution {rms_model:.3f}",
            "  top split of the tree: "
            + (
                f"the {len(nouns)} nouns | the {len(verbs)} verbs"
                if separates
                else f"{' '.join(sorted(min(left, right, key=len)))} | the other {max(len(left), len(right))} "
                "words (not nouns | verbs)"
            ),
        ]
    )
    files: list[Path] = []
    if out is not None:
        import matplotlib.pyplot as plt
        from scipy.cluster.hierarchy import dendrogram

        fig, ax = plt.subplots(figsize=(6, 7))
        dendrogram(
            Z,
            labels=[f"{w} ({_category(data, w)})" for w in words],
            orientation="left",
            ax=ax,
            color_threshold=0.0,
            above_threshold_color="0.3",
        )
        for text in ax.get_yticklabels():
            text.set_color("C0" if text.get_text().split(" ")[0] in elman.NOUNS else "C3")
        ax.set_xlabel("distance between mean hidden states (Ward)")
        ax.set_title(
            "Sentences: per-word mean hidden states, clustered\n(nouns blue, verbs red)", fontsize=10, loc="left"
        )
        fig.tight_layout()
        files += _save(fig, out / "elman-sentences-tree")
    return result, files


def _save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=110)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def report(run: SequenceRun, out: str | Path | None = None, *, test_seed: int | None = None) -> dict:
    """Measure what `run` learned on a fresh stream of its task (seed `test_seed`, default run seed + 1).

    Returns a dict with the numbers, "text" (a summary), "files" (figures written under `out`, PNG and
    SVG, when `out` is given) and, for the sentences, "tree" (the category tree as text).
    """
    task = run.data.name.removeprefix("elman:")
    seed = run.config.get("seed", 0) + 1 if test_seed is None else test_seed
    size = {
        "xor": len(run.data.segments),
        "letters": len(run.data.segments),
        "sentences": len(run.data.segments),
    }
    test = elman.load(task, seed=seed, size=size[task])
    ev = evaluate(run.model, test)
    out = None if out is None else Path(out)
    fn = {"xor": _xor_report, "letters": _letters_report, "sentences": _sentences_report}[task]
    result, files = fn(ev, out)
    result["files"] = [str(f) for f in files]
    result["test_seed"] = seed
    return result
