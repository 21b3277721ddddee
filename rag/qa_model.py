"""An extractive question-answering model, by configured path (`answers.qa_model`; none ships offline).

A model fine-tuned the SQuAD 2.0 way (a start and an end logit per token, the first token's pair scoring "no
answer") reads the question with each of the top passages and points at the span that answers it. Answer
selection (rag.answer_select) then answers with the unit holding that span, and answers at all only when the
span outscores the passage's "no answer" by `answers.qa_min_margin`: a reader that reads beats word overlap and
cosines on the near miss, a passage on the right topic that does not state the fact asked for.

Any local folder that `transformers.AutoModelForQuestionAnswering` loads works (BERT, RoBERTa, DeBERTa, DistilBERT
...). It runs on the CPU or the GPU the generator would use; passages longer than the model's window are read in
overlapping windows, as the transformers question-answering pipeline does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.hardware import torch_device

MAX_LENGTH = 384  # tokens per window (question + passage), SQuAD's usual
STRIDE = 128  # tokens two windows of one long passage share
MAX_ANSWER_TOKENS = 30
MAX_QUESTION_TOKENS = 64  # the pipeline's max_question_len: a longer question would leave no room for the passage
TOP_ENDS = 20  # start and end candidates per window (the pipeline's n-best)


@dataclass(frozen=True)
class FoundSpan:
    """The best span over the passages read: `passage` indexes the texts given, `start`/`end` are character
    offsets in that text."""

    passage: int
    start: int
    end: int
    text: str
    score: float  # start + end logit
    no_answer: float  # the passage's "no answer" score: the lowest over its windows, as the pipeline takes it

    @property
    def margin(self) -> float:
        """How far the span outscores "no answer" (> 0: the model answers)."""
        return self.score - self.no_answer


class QAModel:
    def __init__(self, path: str, device: str = "auto"):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"answers.qa_model: model folder not found: {path}")
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        if not self.tokenizer.is_fast:
            raise ValueError(f"answers.qa_model: {path} has no fast tokenizer (tokenizer.json): spans need offsets")
        self.model = AutoModelForQuestionAnswering.from_pretrained(str(folder), local_files_only=True).eval()
        try:
            self.device = torch_device(device)
        except ValueError as e:
            raise ValueError(f"answers.qa_device: {e}") from None
        self.model.to(self.device)
        self.max_length = min(MAX_LENGTH, self.tokenizer.model_max_length or MAX_LENGTH)
        self._lock = threading.Lock()  # one forward at a time: the model is shared by every request

    def find(self, question: str, texts: list[str]) -> FoundSpan | None:
        """The best-scoring span of `texts` for `question` (all windows in one batch); None when no text has a
        window to read."""
        if not texts or not question.strip():
            return None
        import torch

        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        if len(ids) > MAX_QUESTION_TOKENS:  # its end is where a question asks (the setting comes first)
            question = self.tokenizer.decode(ids[-MAX_QUESTION_TOKENS:])
        enc = self.tokenizer([question] * len(texts), texts, truncation="only_second", max_length=self.max_length,
                             stride=min(STRIDE, self.max_length // 3), return_overflowing_tokens=True,
                             return_offsets_mapping=True, padding=True, return_tensors="pt")
        owners = enc.pop("overflow_to_sample_mapping").tolist()
        offsets = enc.pop("offset_mapping").tolist()
        windows = [enc.sequence_ids(w) for w in range(len(owners))]
        with self._lock, torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()})
        starts = out.start_logits.float().cpu().numpy()
        ends = out.end_logits.float().cpu().numpy()
        best: tuple[float, int, int, int] | None = None  # (score, passage, start char, end char)
        no_answer: dict[int, float] = {}
        for w, owner in enumerate(owners):
            null = float(starts[w, 0] + ends[w, 0])
            no_answer[owner] = min(no_answer.get(owner, null), null)
            context = np.asarray([s == 1 for s in windows[w]])
            if not context.any():
                continue
            s_logits = np.where(context, starts[w], -np.inf)
            e_logits = np.where(context, ends[w], -np.inf)
            for i in np.argsort(-s_logits)[:TOP_ENDS]:
                for j in np.argsort(-e_logits)[:TOP_ENDS]:
                    if j < i or j - i + 1 > MAX_ANSWER_TOKENS or not (context[i] and context[j]):
                        continue
                    score = float(s_logits[i] + e_logits[j])
                    if best is None or score > best[0]:
                        best = (score, owner, offsets[w][i][0], offsets[w][j][1])
        if best is None:
            return None
        score, owner, start, end = best
        return FoundSpan(owner, start, end, texts[owner][start:end], score, no_answer[owner])


_loaded: dict[tuple[str, str], QAModel] = {}
_loaded_lock = threading.Lock()


def qa_model(path: str, device: str = "auto") -> QAModel:
    """One loaded model per (folder, device) in a process: the weights are read once, whoever asks."""
    key = (str(Path(path).expanduser().resolve()), device)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = QAModel(path, device)
        return _loaded[key]
