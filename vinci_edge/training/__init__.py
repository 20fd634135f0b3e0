"""Training the small OmniVinci from scratch on the synthetic audio-visual task (`vinci_edge.avtask`).

recipe.py  the recipe (sizes, schedule, loss weights) and the ablations, as configs
batch.py   clips made in memory -> the prompt's chunks and plan (the runtime's own builder) ->
           tensors: frames, mel windows, the shared media prefix, each question's tail
loop.py    the model forward (towers, projectors, TEG + CRTE stitch, the LLM with the media
           prefix computed once per clip), LM loss + OmniAlignNet loss + the media probe, the
           towers' phase, progress, resume
row_probe.py  what a trained checkpoint's media rows say (a fresh linear classifier per label)
cli.py     `vinci-edge train`
"""
