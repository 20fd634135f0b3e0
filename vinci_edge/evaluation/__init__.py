"""Task accuracy: the synthetic audio-visual task's held-out questions answered by the PyTorch
reference and by engines (fp32 and quantized), scored per category with 95% intervals.

    answerers.py  one interface over the reference (checkpoint) and the runtime (engine folder)
    task_eval.py  the held-out split through an answerer: each clip preprocessed once, each question
                  laid out by the same prompt builder, greedy answers compared with the ground truth
    report.py     JSON + Markdown + SVG, and how two answerers agree question by question
    cli.py        `vinci-edge task-split` (write a held-out split) and `vinci-edge task-eval`
"""
