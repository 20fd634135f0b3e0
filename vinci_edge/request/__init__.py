"""A request, from files and a question to what the encoders and the decoder take.

    modality.preprocess (video.py, audio.py, image.py) -> media chunks (chunks.py)
    prompt.PromptBuilder.build -> the prompt: chunks in order, token ids, the plan
    encode.encode_banks -> each media chunk encoded once by its modality -> the plan's banks

Torch-free and shared by the PyTorch reference and the runtime.
"""
