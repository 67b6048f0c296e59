"""The file names of the pipeline's artifacts, written once: the Prefect tasks write them into
their content-addressed folders, and tests/test_layout.py checks that dvc.yaml's outputs use
the same names."""

TEACHER = "teacher"  # a fine-tuned teacher folder (weights, tokenizer, metrics.json)
SAMPLE = "sample.safetensors"  # the drawn sample with the teacher's logits
K_REP = "k_rep.parquet"  # iteration-0 representational knowledge
K_PRED = "k_pred.parquet"  # iteration-0 predictive knowledge
LATENCY_TABLE = "table.json"  # a latency budget's table (kprune.pruning.latency_table)
MASKS = "masks.json"  # the search stage's masks (K-prune's one-shot search, or a baseline's)
MODEL = "model"  # the pruned model folder (weights, kprune.json, report.json, tokenizer)
ITERATIONS = "iterations.parquet"  # the loop's per-iteration score tables
EVAL_METRICS = "metrics.json"  # the evaluation of a pruned model against its teacher
EVAL_PLOTS = "plots"
TARGET = "target"  # a target search's folder (kprune.target: model, graphs, trace, summary)
TIMING = "latency.json"  # a deferred timing of a pruned model against its teacher
ONNX = "model.onnx"  # the exported graph (its record: model.onnx.json; int8: model.int8.onnx)
