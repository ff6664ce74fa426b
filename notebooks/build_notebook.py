"""Write notebooks/autosteer_demo.ipynb and execute it in place, saving its outputs.

    python notebooks/build_notebook.py            # write + execute (about a minute on 2 cores)
    python notebooks/build_notebook.py --no-run   # write only

The searches' logs and plots go to a temporary folder, never into the repository, and
the saved outputs hold no progress bars, warnings or local paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "autosteer_demo.ipynb"

CELLS = [
    ("md", """# AutoSteer on the embedded model organism

The organism is a small Llama (8 decoder layers) trained by `scripts/train_organism.py` on a synthetic world of
arithmetic questions. Answers framed by *logical / precise / analytical* are right, answers framed by
*confused / irrational / imprecise* are wrong, and unframed questions are answered either way. So the unframed model is
right only part of the time, and steering with the right concept at the right layer should make it right.

Everything here runs offline on a laptop CPU."""),
    ("code", """import tempfile
from pathlib import Path

import torch
from autosteer import Steer, DecaySchedule, CosineSchedule, WarmupSchedule, SteerEvaluator, load_model
from autosteer.organism import world

torch.manual_seed(0)
model, tokenizer = load_model("organism", progress=False)
out = Path(tempfile.mkdtemp(prefix="autosteer-notebook-"))   # logs and plots: outside the repository
print(type(model).__name__, sum(p.numel() for p in model.parameters()), "parameters,",
      model.config.num_hidden_layers, "decoder layers")
held_prompts, held_expected = world.heldout_prompts(100)
evaluator = SteerEvaluator(model, tokenizer, "task_accuracy", max_new_tokens=4, batch_size=50)"""),
    ("md", "## Manual steering: before and after"),
    ("code", """examples = held_prompts[:4]
before = evaluator.generate(examples)
baseline_acc = evaluator.evaluate(held_prompts, held_expected)

with Steer(model, tokenizer) as steered:
    steered.add(layer_idx=MANUAL_LAYER, coeff=MANUAL_COEFF, text=MANUAL_TEXT)
    print(steered.get_all())
    after = evaluator.generate(examples)
    steered_acc = evaluator.evaluate(held_prompts, held_expected)

for p, e, b, a in zip(examples, held_expected, before, after):
    print(f"{p:24s} expected {e:3s} | before {b.strip():10s} | after {a.strip()}")
print(f"held-out accuracy on {len(held_prompts)} prompts: {baseline_acc:.2f} -> {steered_acc:.2f}")"""),
    ("md", "After the `with` block the model computes exactly as before:"),
    ("code", """assert evaluator.evaluate(held_prompts, held_expected) == baseline_acc"""),
    ("md", "## The three schedules\nEach multiplies the coefficient as a function of the generation step (0 at the prefill)."),
    ("code", """import numpy as np
import matplotlib.pyplot as plt

steps = np.arange(40)
schedules = {
    "DecaySchedule(0.85, 0.2)": DecaySchedule(0.85, 0.2),
    "DecaySchedule(0.7, 0.3, times_restart=2)": DecaySchedule(0.7, 0.3, 2),
    "CosineSchedule(25, 0.1)": CosineSchedule(25, 0.1),
    "WarmupSchedule(10, 0.2)": WarmupSchedule(10, 0.2),
}
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, s in schedules.items():
    ax.plot(steps, s(steps), label=name)   # vectorised: one C call per schedule
ax.set_xlabel("generation step"); ax.set_ylabel("multiplier"); ax.legend(fontsize=8); fig.tight_layout()"""),
    ("md", """## The autonomous search: task accuracy
16 search prompts, 30 iterations, seed 0; the held-out prompts are scored for the baseline and each new best but never
decide anything."""),
    ("code", """from autosteer import AutoSteerRunner, SteerSearchSpace, plot_history
from autosteer.demo import DEMO_SPACE

prompts, expected = world.search_prompts(16)
space = SteerSearchSpace(**DEMO_SPACE)
runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=prompts, metric="task_accuracy",
                         expected_outputs=expected, search_space=space, max_new_tokens=4,
                         holdout=(held_prompts, held_expected), log_path=out / "task_accuracy.tsv", seed=0)
results = runner.run(max_iterations=30, verbose=False, batch_size=16)
print(results)"""),
    ("code", """plot_history(results, out / "task_accuracy.png", title="task accuracy search")"""),
    ("md", """## The autonomous search: perplexity
The same loop minimising the perplexity of the correct answer given the question (`expected_outputs` are scored
given their prompts)."""),
    ("code", """ppl_runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=prompts, expected_outputs=expected,
                             metric="perplexity", search_space=space, holdout=(held_prompts, held_expected),
                             log_path=out / "perplexity.tsv", seed=0)
ppl_results = ppl_runner.run(max_iterations=30, verbose=False, batch_size=16)
print(ppl_results)"""),
    ("code", """plot_history(ppl_results, out / "perplexity.png", title="perplexity search")"""),
    ("md", "## Applying the best configuration\n`best_steer_code` is what you paste into your own code; `applied` does the same here, for the `with` block only."),
    ("code", """print(results["best_steer_code"])
steered = Steer(model, tokenizer)
with steered.applied(results["best_candidate"]):
    for p, e, a in zip(examples, held_expected, evaluator.generate(examples)):
        print(f"{p:24s} expected {e:3s} | steered {a.strip()}")
    print("held-out accuracy with the best configuration:", evaluator.evaluate(held_prompts, held_expected))"""),
]

# manual-steering example: a configuration from the layer x coefficient sweep (README)
MANUAL = {"MANUAL_LAYER": "0", "MANUAL_COEFF": "-0.2", "MANUAL_TEXT": '"imprecise"'}


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    for kind, src in CELLS:
        for k, v in MANUAL.items():
            src = src.replace(k, v)
        nb.cells.append(new_markdown_cell(src) if kind == "md" else new_code_cell(src))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-run", action="store_true", help="write the notebook without executing it")
    a = p.parse_args(argv)
    nb = build()
    if not a.no_run:
        nb = execute(nb, HERE)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
