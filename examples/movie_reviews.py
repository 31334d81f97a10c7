"""Movie-review sentence polarity, a real text task that installs from PyPI: a dataset of the user's own kind
(`data.name: examples.movie_reviews:splits`), written outside lth as a researcher would write theirs.

The sentences are the 10,605 movie-review snippets of Pang & Lee's sentence-polarity data (2005) that Hutto &
Gilbert (2014, VADER, §3) had rated by 15 people each, from -4 to 4; their file
`movieReviewSnippets_GroundTruth.txt` ships inside the source distribution of vaderSentiment 3.3.2:

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d data/vader

with `data.root: data/vader`, the folder that holds `vaderSentiment-3.3.2.tar.gz` (read as it is, not unpacked).

- Label: positive when the mean rating is above 0, negative below; the 37 rated exactly 0 are left out:
  5,242 positive and 5,326 negative snippets, so a constant guess scores at most 0.504.
- Split: every tenth snippet by its id is the test split (1,054); lth carves its validation split from the
  other 9,514.
- Tokens: lowercased words (with their apostrophe suffix) and single punctuation marks. The vocabulary is the
  training split's 8,189 most frequent words (by count, then alphabetically), after [PAD] = 0, [UNK] = 1 and
  [CLS] = 2: `vocab_size: 8192`. A snippet is [CLS] and at most 63 of its tokens (the longest has 64).
- Batches: `pad` pads each batch to its longest snippet, with an attention mask (BERT's input, Devlin et al. 2019).
"""

from __future__ import annotations

import collections
import io
import re
import tarfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

SDIST = "vaderSentiment-3.3.2.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
PAD, UNK, CLS = 0, 1, 2
VOCAB_SIZE = 8192
LONGEST = 64  # tokens, [CLS] included: BERT's `max_position_embeddings`


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower())


def _snippets(root: Path) -> list[tuple[int, float, str]]:
    """(id, mean rating, text) of every snippet, read from the source distribution's nested archive."""
    path = root / SDIST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d {root}")
    with tarfile.open(path) as sdist:
        inner = sdist.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as resources:
        text = resources.extractfile(SNIPPETS).read().decode("utf-8")
    return [(int(i), float(rating), snippet) for i, rating, snippet in (line.split("\t") for line in text.splitlines() if line.strip())]


class Snippets(Dataset):
    def __init__(self, rows: list[tuple[int, float, str]], vocabulary: dict[str, int]):
        self.ids = [torch.tensor([CLS, *(vocabulary.get(w, UNK) for w in words(text))][:LONGEST]) for _, _, text in rows]
        self.labels = [int(rating > 0) for _, rating, _ in rows]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i])}, self.labels[i]


def pad(inputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch padded to its longest snippet: [PAD] tokens, masked out of attention."""
    return {key: torch.nn.utils.rnn.pad_sequence([x[key] for x in inputs], batch_first=True, padding_value=PAD) for key in inputs[0]}


def splits(root: str) -> dict:
    rows = [row for row in _snippets(Path(root)) if row[1] != 0]
    train, test = [r for r in rows if r[0] % 10], [r for r in rows if not r[0] % 10]
    counts = collections.Counter(w for _, _, text in train for w in words(text))
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[: VOCAB_SIZE - 3]
    vocabulary = {w: i + 3 for i, w in enumerate(ranked)}
    return {"train": Snippets(train, vocabulary), "test": Snippets(test, vocabulary), "num_classes": 2, "collate": pad}
