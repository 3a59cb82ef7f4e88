"""Checks poc's chat-template rendering against transformers' `apply_chat_template`, on the
real Llama-3.1-8B-Instruct chat template.

    ~/.cache/poc/torch-2.9.0/bin/python scripts/check_chat_template.py OUT

writes two model directories under OUT, each the tiny-llama test fixture
(runtime/tests/fixtures/tiny-llama: its config, weights and Llama-3-style tokenizer with the
Llama-3 special tokens) given Meta's Llama-3.1-8B-Instruct chat template:

  OUT/config   the template as the `chat_template` of tokenizer_config.json
  OUT/jinja    the template as chat_template.jinja, beside a tokenizer_config.json whose own
               `chat_template` raises: the file takes precedence, as in transformers

and prints JSON on stdout: conversational rows in TRL's formats and, for each, what
transformers renders and tokenizes (the prompt with add_generation_prompt=True; the whole
conversation for each completion; `tokenize=True`, which adds no special tokens). The Rust test
runtime/tests/chat_template.rs runs this and compares poc's tokenization of the same rows.
Needs the venv of scripts/setup.sh (transformers 4.57.1).
"""
import hashlib
import json
import os
import shutil
import sys

from transformers import AutoTokenizer

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runtime", "tests",
                       "fixtures", "tiny-llama")

# Meta's Llama-3.1-8B-Instruct `chat_template` (its tokenizer_config.json), exactly: it always
# writes a system block with the knowledge cutoff and a date, and supports tools, built-in tools
# and tool calls.
LLAMA31_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""
# The template's text is kept byte for byte (an edit would change what is checked).
LLAMA31_SHA256 = "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65"


def m(role, content):
    return {"role": role, "content": content}


# Conversational rows as TRL reads them.
ROWS = [
    # A system message; whitespace the template trims.
    {"prompt": [m("system", "Be brief. "), m("user", "  Hello! How are you?")],
     "chosen": [m("assistant", "I'm fine, thanks. ")],
     "rejected": [m("assistant", "Go away.")]},
    # No system message: the template writes its own system block.
    {"prompt": [m("user", "What is 2 + 2?")],
     "chosen": [m("assistant", "4")],
     "rejected": [m("assistant", "5, or so.")]},
    # A multi-turn prompt, and a completion of several turns.
    {"prompt": [m("system", "You are a calm owl."), m("user", "Hi!"),
                m("assistant", "Hello there."), m("user", "Tell me a fact.")],
     "chosen": [m("assistant", "Owls can turn their heads 270 degrees.")],
     "rejected": [m("assistant", "No."), m("user", "Please?"), m("assistant", "Still no.")]},
    # TRL's implicit prompt: the leading messages chosen and rejected share.
    {"chosen": [m("user", "Name a color."), m("assistant", "Blue.")],
     "rejected": [m("user", "Name a color."), m("assistant", "Seven.")]},
    # A tool result, which the template writes through `tojson` (HTML characters kept).
    {"prompt": [m("user", "Weather in Paris?"), m("tool", '{"temp": 21, "sky": "<sunny> & dry"}')],
     "chosen": [m("assistant", "21 degrees and sunny.")],
     "rejected": [m("assistant", "It is raining.")]},
    # SFT demonstrations: prompt and completion lists, and a multi-turn `messages` row whose
    # earlier assistant turns are trained on too.
    {"prompt": [m("user", "Say hi.")], "completion": [m("assistant", "Hi!")]},
    {"messages": [m("system", "Be kind."), m("user", "Hi"), m("assistant", "Hello!"),
                  m("user", "Bye"), m("assistant", "Goodbye!")]},
]


def split(row):
    """TRL's prompt and completions of a row: (prompt messages, {name: completion messages})."""
    if "messages" in row:
        return row["messages"][:-1], {"completion": row["messages"][-1:]}
    if "completion" in row:
        return row["prompt"], {"completion": row["completion"]}
    if "prompt" in row:
        return row["prompt"], {"chosen": row["chosen"], "rejected": row["rejected"]}
    n = 0
    while row["chosen"][n] == row["rejected"][n]:
        n += 1
    return row["chosen"][:n], {"chosen": row["chosen"][n:], "rejected": row["rejected"][n:]}


def model_dir(out, name, config_template, jinja):
    path = os.path.join(out, name)
    os.makedirs(path, exist_ok=True)
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(os.path.join(FIXTURE, f), path)
    with open(os.path.join(FIXTURE, "tokenizer_config.json")) as f:
        config = json.load(f)
    config["chat_template"] = config_template
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if jinja is not None:
        with open(os.path.join(path, "chat_template.jinja"), "w") as f:
            f.write(jinja)
    return path


def expected(tok, row):
    prompt, sides = split(row)
    apply = tok.apply_chat_template
    prompt_text = apply(prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = apply(prompt, add_generation_prompt=True, tokenize=True)
    case = {"row": row, "prompt": prompt, "prompt_text": prompt_text, "prompt_ids": prompt_ids,
            "sides": {}, "earlier": []}
    for name, completion in sides.items():
        text = apply(prompt + completion, tokenize=False)
        ids = apply(prompt + completion, tokenize=True)
        assert text.startswith(prompt_text), (text, prompt_text)
        assert ids[:len(prompt_ids)] == prompt_ids, name
        # tokenize=True tokenizes the rendered text without adding special tokens.
        assert ids == tok(text, add_special_tokens=False)["input_ids"]
        case["sides"][name] = {"messages": completion, "completion_text": text[len(prompt_text):],
                               "ids": ids}
    if "messages" in row:
        # Each earlier assistant turn: from the end of the conversation before it with the
        # generation prompt to the end of the conversation through it.
        messages = row["messages"]
        for i in range(1, len(messages) - 1):
            if messages[i]["role"] == "assistant":
                start = len(apply(messages[:i], add_generation_prompt=True, tokenize=True))
                end = len(apply(messages[:i + 1], tokenize=True))
                case["earlier"].append([start, end])
    return case


def main():
    out = sys.argv[1]
    assert hashlib.sha256(LLAMA31_CHAT_TEMPLATE.encode()).hexdigest() == LLAMA31_SHA256
    refuse = "{{ raise_exception('the chat_template of tokenizer_config.json was used') }}"
    dirs = [model_dir(out, "config", LLAMA31_CHAT_TEMPLATE, None),
            model_dir(out, "jinja", refuse, LLAMA31_CHAT_TEMPLATE)]
    cases = None
    for path in dirs:
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.chat_template == LLAMA31_CHAT_TEMPLATE, path
        these = [expected(tok, row) for row in ROWS]
        assert cases is None or these == cases, "both directories render alike"
        cases = these
    # It is 3.1's template: the system block with the cutoff and the fixed date, always.
    assert cases[1]["prompt_text"].startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>")
    # ... with tool support (poc passes no tools, as TRL does for these rows).
    tool = {"type": "function", "function": {"name": "weather", "description": "The weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    assert "Environment: ipython" in tok.apply_chat_template(ROWS[1]["prompt"], tools=[tool],
                                                             tokenize=False)
    json.dump({"dirs": dirs, "cases": cases}, sys.stdout)


if __name__ == "__main__":
    main()
