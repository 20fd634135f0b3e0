"""Chat templates (Jinja, rendered the way transformers renders `tokenizer_config.json`'s template)."""

from __future__ import annotations

# Qwen2-Instruct's own template, character for character: ChatML with the default system prompt
# "You are a helpful assistant." when the conversation does not start with one.
CHATML_QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Used when a tokenizer folder has no template at all: ChatML without an implicit system prompt, so
# nothing is said on the model's behalf that its own template would not say.
CHATML_PLAIN = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
