"""The commented starter spec written by `streamfm init`."""

STARTER_SPEC = """\
# streamfm spec: what to read, which features to build, how to learn.
# Every key can be overridden on the command line: streamfm train spec.yaml --set learner.epochs=5
# Relative paths are relative to the directory you run streamfm from.

source:
  path: data/train.parquet        # a file, a glob (data/*.csv), a folder, a list, or - for stdin
  # format: parquet               # parquet | csv | libfm | jsonl; inferred from the extension
  batch_size: 65536               # rows per chunk
  # csv: {delimiter: ",", header: true, null_values: ["", "NA", "?"]}

task: regression                  # regression | classification
target: rating                    # the column to learn
# target: {column: income, positive: [">50K"]}   # classification: values that mean class 1

features:                         # each builder is a feature group
  - type: categorical             # one-hot of user ids (vocabulary grows as users appear)
    columns: [user]
  - type: categorical
    columns: [item]
  # - type: numeric
  #   columns: [age]
  #   transform: standardize      # raw | log1p | standardize
  # - type: categorical           # a cross: user x weekday
  #   columns: [user, weekday]
  #   hash_bits: 20               # hashed into 2^20 ids instead of an exact vocabulary

model:
  k: 8                            # latent factors
  init_std: 0.1
  seed: 0                         # drives everything random: same spec + data = same model

learner:
  optimizer: adagrad              # sgd (as libFM) | adagrad (per-coordinate steps)
  learning_rate: 0.1              # sgd: ~0.01; adagrad: ~0.1
  reg_linear: 0.0
  reg_factors: 0.0001
  epochs: 10
  shuffle_buffer: 0               # rows; > 0 shuffles within windows of this size

# groups:                         # per-group L2 overrides, by builder name
#   user: {factors: 0.001}

validation:
  # source: {path: data/test.parquet}
  every_rows: 0                   # also evaluate every N rows (0: at epoch ends)
  patience: 0                     # early stopping after N evaluations without improvement

output:
  dir: runs/{spec}                # model.sfm, metrics.json, metrics.csv go here
"""
