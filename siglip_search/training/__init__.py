"""The workshop that trains the demo model; the model core never imports it (the command line does).

options.py     TrainConfig (a run's options) and DEMO_CONFIG (the demo model's architecture)
loop.py        train(): AdamW, warm-up + cosine, the locked-text phase, resumable checkpoints
run_folder.py  the output folder: what it may hold before a run starts or resumes, and its files
data.py        per-step batches from the synthetic world or a captioned folder
synthetic.py   the synthetic world of coloured shapes with true captions
evaluate.py    zero-shot accuracy, recall@k and tagging precision/recall on a held-out set

Nothing is imported here, so `siglip_search.training.synthetic` does not pay for torch.
"""
