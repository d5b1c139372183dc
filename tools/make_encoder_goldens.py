#!/usr/bin/env python3
"""Regenerates testdata/encoder/generated/cases.json with the official DeepSeek-V4 prompt encoder.

The reference (encoding_dsv4.py, stdlib only) is NOT part of this repository. This script fetches
the SGLang wheel from PyPI (its sglang/srt/entrypoints/openai/encoding_dsv4.py is "adapted from the
DeepSeek-V4 release reference"; 0.5.18 adds the 0731 effort table as profile "official") into a cache
folder, imports the module from there, checks it against the official golden cases in
testdata/encoder/official/ first, and then writes every case below with the reference's output.

Needs: Python 3.9+, pip, network access to PyPI. No other packages.
Usage: python3 tools/make_encoder_goldens.py [--cache DIR]
"""
import argparse
import copy
import glob
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

SGLANG_VERSION = "0.5.18"
MODULE_PATH = "sglang/srt/entrypoints/openai/encoding_dsv4.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(ROOT, "testdata", "encoder", "official")
OUT = os.path.join(ROOT, "testdata", "encoder", "generated", "cases.json")
PARSE_OUT = os.path.join(ROOT, "testdata", "encoder", "generated", "parse_cases.json")


def load_reference(cache):
    os.makedirs(cache, exist_ok=True)
    wheels = glob.glob(os.path.join(cache, f"sglang-{SGLANG_VERSION}-*.whl"))
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                               f"sglang=={SGLANG_VERSION}", "-d", cache])
        wheels = glob.glob(os.path.join(cache, f"sglang-{SGLANG_VERSION}-*.whl"))
    target = os.path.join(cache, "encoding_dsv4.py")
    with zipfile.ZipFile(wheels[0]) as z:
        with open(target, "wb") as f:
            f.write(z.read(MODULE_PATH))
    spec = importlib.util.spec_from_file_location("encoding_dsv4", target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def to_reference_keys(messages):
    # The vLLM copies of the golden inputs spell the field "reasoning"; the reference reads
    # "reasoning_content". (The C++ reader accepts both.)
    messages = copy.deepcopy(messages)
    for m in messages:
        if "reasoning" in m:
            m["reasoning_content"] = m.pop("reasoning")
    return messages


def check_official(ref):
    modes = {1: "thinking", 2: "thinking", 3: "thinking", 4: "chat"}
    for n, mode in modes.items():
        with open(os.path.join(OFFICIAL, f"test_input_{n}.json"), encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict):  # case 1: the official test attaches tools to messages[0]
            messages = doc["messages"]
            messages[0]["tools"] = doc["tools"]
        else:
            messages = doc
        with open(os.path.join(OFFICIAL, f"test_output_{n}.txt"), encoding="utf-8", newline="") as f:
            gold = f.read()
        got = ref.encode_messages(to_reference_keys(messages), thinking_mode=mode)
        if got != gold:
            sys.exit(f"reference does not reproduce official golden case {n}; refusing to continue")
    print("reference reproduces the 4 official golden cases")


def tool(name, desc, props, required=None):
    params = {"type": "object", "properties": props}
    if required is not None:
        params["required"] = required
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": params}}


WEATHER = tool("get_weather", "Get weather",
               {"city": {"type": "string"}, "days": {"type": "integer"}}, ["city"])
CALC = tool("calc", "Evaluate an expression — exactly; \"quotes\", back\\slash, tab\t and 中文",
            {"expr": {"type": "string", "description": "e.g. 2*(3+4)"},
             "precision": {"type": "number", "default": 1e-05, "maximum": 1e16},
             "flags": {"type": "array", "items": {"type": "boolean"}}}, ["expr"])
PING = tool("ping", "No parameters", {})


def call(cid, name, args):
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def cases():
    sys_msg = {"role": "system", "content": "You are a helpful assistant."}
    c = []

    def add(name, messages, mode, effort=None, revision="original", drop_thinking=True):
        c.append({"name": name, "thinking_mode": mode, "reasoning_effort": effort,
                  "encoder_revision": revision, "drop_thinking": drop_thinking,
                  "messages": messages})

    add("chat_single_turn", [sys_msg, {"role": "user", "content": "What is 2+2?"}], "chat")
    add("thinking_single_turn", [sys_msg, {"role": "user", "content": "What is 2+2?"}], "thinking")
    multi = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hi"},
             {"role": "assistant", "reasoning_content": "Greet.", "content": "Hello!"},
             {"role": "user", "content": "2+2?"}]
    add("thinking_multi_turn_drops_history_reasoning", multi, "thinking")
    add("thinking_multi_turn_keep_reasoning", multi, "thinking", drop_thinking=False)
    add("chat_multi_turn", multi, "chat")
    add("thinking_tool_loop_empty_system",
        [{"role": "system", "content": "", "tools": [WEATHER]},
         {"role": "user", "content": "Weather in Paris for 2 days?"},
         {"role": "assistant", "reasoning_content": "Need the tool.", "content": "",
          "tool_calls": [call("c1", "get_weather", {"city": "Paris", "days": 2})]},
         {"role": "tool", "tool_call_id": "c1", "content": "sunny, 22C"}], "thinking")
    add("chat_parallel_calls_results_out_of_order",
        [{"role": "system", "content": "S", "tools": [WEATHER]},
         {"role": "user", "content": "Paris and Rome?"},
         {"role": "assistant", "content": "Checking.",
          "tool_calls": [call("a", "get_weather", {"city": "Paris"}),
                         call("b", "get_weather", {"city": "Rome", "days": 3})]},
         {"role": "tool", "tool_call_id": "b", "content": "rain"},
         {"role": "tool", "tool_call_id": "a", "content": "sun"}], "chat")
    prove = [{"role": "user", "content": "Prove it."}]
    add("effort_original_max", prove, "thinking", effort="max")
    add("effort_original_high", prove, "thinking", effort="high")
    add("effort_original_max_chat_mode_ignored", prove, "chat", effort="max")
    add("effort_0731_default", prove, "thinking", revision="0731")
    add("effort_0731_low", prove, "thinking", effort="low", revision="0731")
    add("effort_0731_high", prove, "thinking", effort="high", revision="0731")
    add("effort_0731_max_with_system", [{"role": "system", "content": "S"}] + prove, "thinking",
        effort="max", revision="0731")
    add("reminder_response_format_action_task_chat",
        [{"role": "system", "content": "S", "response_format": {"type": "json_object"}},
         {"role": "latest_reminder", "content": "2026-05-01,Beijing,App,English"},
         {"role": "user", "content": "Weather today?", "task": "action"}], "chat")
    add("action_task_thinking",
        [{"role": "user", "content": "Weather today?", "task": "action"}], "thinking")
    add("query_task_thinking", [{"role": "user", "content": "Weather today?", "task": "query"}],
        "thinking")
    add("read_url_task",
        [{"role": "user", "content": "Summarise<｜extracted_url｜>https://example.com/a",
          "task": "read_url"}], "chat")
    add("title_task_on_assistant",
        [{"role": "user", "content": "Tell me a joke"},
         {"role": "assistant", "content": "Why did the chicken...", "task": "title"},
         {"role": "assistant", "content": "Chicken joke"}], "thinking")
    add("wo_eos_prefix_completion_chat",
        [{"role": "user", "content": "Write code"},
         {"role": "assistant", "content": "```python\n", "wo_eos": True}], "chat")
    add("developer_in_history_dropped",
        [{"role": "system", "content": "S"},
         {"role": "developer", "content": "Search first."},
         {"role": "assistant", "reasoning_content": "ok", "content": "Done."},
         {"role": "user", "content": "Next?"}], "thinking")
    add("developer_with_tools_and_response_format",
        [{"role": "developer", "content": "Use tools.", "tools": [CALC, PING],
          "response_format": {"type": "json_schema", "json_schema": {
              "name": "r", "schema": {"type": "object", "properties": {"x": {"type": "number"}}}}}}],
        "thinking")
    add("two_system_messages_concatenate",
        [{"role": "system", "content": "S1"}, {"role": "system", "content": "S2"},
         {"role": "user", "content": "U"}], "chat")
    add("system_after_assistant",
        [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
         {"role": "system", "content": "Now be terse."}, {"role": "user", "content": "U2"}], "thinking")
    add("ends_on_system_no_generation_prompt",
        [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
         {"role": "system", "content": "S"}], "chat")
    add("tool_result_list_content_and_unknown_ids",
        [{"role": "system", "content": "", "tools": [WEATHER, CALC]},
         {"role": "user", "content": "Go"},
         {"role": "assistant", "reasoning_content": "two calls", "content": "",
          "tool_calls": [call("x1", "calc", {"expr": "1+1", "precision": 0.5, "flags": [True, False]}),
                         call("x2", "get_weather", {"city": "Oslo"})]},
         {"role": "tool", "tool_call_id": "zz", "content": [{"type": "text", "text": "first"},
                                                           {"type": "image", "url": "u"},
                                                           {"type": "text", "text": "second"}]},
         {"role": "tool", "tool_call_id": "x2", "content": "cold"},
         {"role": "tool", "tool_call_id": "x1", "content": "2"},
         {"role": "user", "content": "And?"}], "thinking")
    add("zero_parameter_call_and_rich_arguments",
        [{"role": "system", "content": "", "tools": [PING, CALC]},
         {"role": "user", "content": "ping then calc"},
         {"role": "assistant", "content": "",
          "tool_calls": [call("p", "ping", {}),
                         call("q", "calc", {"expr": "say \"hi\"\nline2\t<x>", "precision": 1e-05,
                                            "flags": None, "nested": {"a": [1, 2.5, "中文"], "b": {}},
                                            "big": 12345678901234, "neg": -0.25, "t": True,
                                            "floats": [1e15, 1234567890123456.0, 1e16, 1.5e-07, 0.0001, -0.0]})]},
         {"role": "tool", "tool_call_id": "p", "content": "pong"},
         {"role": "tool", "tool_call_id": "q", "content": "ok"},
         {"role": "assistant", "content": "All done."}], "chat")
    add("consecutive_user_messages_merge",
        [{"role": "user", "content": "part one"}, {"role": "user", "content": "part two"}], "thinking")
    add("user_after_tool_results_same_turn",
        [{"role": "system", "content": "", "tools": [WEATHER]},
         {"role": "user", "content": "Weather?"},
         {"role": "assistant", "content": "", "reasoning_content": "call",
          "tool_calls": [call("w", "get_weather", {"city": "Lima"})]},
         {"role": "tool", "tool_call_id": "w", "content": "warm"},
         {"role": "user", "content": "Also, thanks."}], "thinking")
    add("latest_reminder_after_user",
        [{"role": "user", "content": "U"}, {"role": "latest_reminder", "content": "R"}], "thinking")
    add("assistant_after_last_user_keeps_reasoning",
        [{"role": "user", "content": "Q1"},
         {"role": "assistant", "reasoning_content": "old", "content": "A1"},
         {"role": "user", "content": "Q2"},
         {"role": "assistant", "reasoning_content": "new", "content": "A2"}], "thinking")
    add("empty_and_missing_content",
        [{"role": "system"}, {"role": "user", "content": ""},
         {"role": "assistant", "content": None}, {"role": "user", "content": "x"}], "chat")
    add("whitespace_and_special_text_kept",
        [{"role": "user", "content": "  <think> literal </think> and ｜DSML｜ \n\n"},
         {"role": "assistant", "content": "trailing newline\n", "reasoning_content": " r "},
         {"role": "user", "content": "\ttab"}], "thinking", drop_thinking=False)
    add("chat_tool_loop_final_answer",
        [{"role": "system", "content": "Agent.", "tools": [CALC]},
         {"role": "user", "content": "6*7?"},
         {"role": "assistant", "content": "Let me compute.",
          "tool_calls": [call("k", "calc", {"expr": "6*7"})]},
         {"role": "tool", "tool_call_id": "k", "content": "42"},
         {"role": "assistant", "content": "42."},
         {"role": "user", "content": "Thanks"}], "chat")
    return c


EOS = "<｜end▁of▁sentence｜>"
DS = "｜DSML｜"


def dsml_block(*invokes):
    return "\n\n<" + DS + "tool_calls>\n" + "\n".join(invokes) + "\n</" + DS + "tool_calls>"


def invoke(name, *params):
    return ("<" + DS + 'invoke name="' + name + '">\n' + "\n".join(params) + "\n</" + DS + "invoke>")


def param(key, value, is_str=True):
    return ("<" + DS + 'parameter name="' + key + '" string="' + ("true" if is_str else "false") + '">'
            + value + "</" + DS + "parameter>")


def parse_cases():
    """Completion texts for the official parser: well-formed ones and ones it must reject."""
    w = invoke("get_weather", param("city", "Paris"), param("days", "2", False))
    c = [
        ("thinking", "Simple arithmetic.</think>2 + 2 = 4." + EOS),
        ("thinking", "Need tool.</think>" + dsml_block(w) + EOS),
        ("chat", "Let me check." + dsml_block(invoke("ping")) + EOS),
        ("chat", "Plain answer with <b>tags</b> and 中文\n\nnew paragraph\n" + EOS),
        ("chat", "" + EOS),
        ("thinking", "</think>" + EOS),
        ("thinking", "multi\nline\nreasoning</think>" + dsml_block(
            w, invoke("calc", param("expr", 'say "hi"\n<x> & y'),
                      param("obj", '{"a": [1, 2.5], "b": null}', False),
                      param("flag", "true", False), param("empty", "")),
            invoke("ping")) + EOS),
        ("chat", dsml_block(invoke("f", param("v", "line1\nline2\n"))) + EOS),
        ("chat", "x" + dsml_block(invoke("f", param("a", "1"), param("b", "two"))) + EOS),
        ("chat", "spaces  \t" + dsml_block(invoke("f", param("k", "<not a tag>"))) + EOS),
        ("chat", "raw non-JSON false value" + dsml_block(invoke("f", param("k", "not json", False))) + EOS),
        ("chat", "zero invokes" + "\n\n<" + DS + "tool_calls>\n</" + DS + "tool_calls>" + EOS),
        ("chat", "block ends the text" + dsml_block(invoke("ping"))),
        # Rejected by the official parser:
        ("thinking", "no end of reasoning" + EOS),
        ("thinking", "tool call inside reasoning" + dsml_block(w) + EOS),
        ("chat", "truncated, no EOS"),
        ("chat", "stray </think> in chat content" + EOS),
        ("chat", "text after calls" + dsml_block(w) + "\nmore" + EOS),
        ("chat", "dup" + dsml_block(invoke("f", param("a", "1"), param("a", "2"))) + EOS),
        ("chat", "bad sep" + dsml_block(invoke("f", param("a", "1"))).replace(">\n</" + DS + "invoke", "></" + DS + "invoke") + EOS),
        ("chat", "bad name" + dsml_block(invoke("f")).replace('name="f"', "name=f") + EOS),
        ("chat", "bad flag" + dsml_block(invoke("f", param("a", "1"))).replace('string="true"', 'string="yes"') + EOS),
        ("chat", "unterminated block" + "\n\n<" + DS + "tool_calls>\n" + w[:40]),
        ("thinking", "a</think>b" + EOS + "after eos"),
        ("thinking", "<think>re-opened</think>answer" + EOS),
    ]
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache", "encoder-reference"))
    args = ap.parse_args()
    ref = load_reference(args.cache)
    check_official(ref)
    out = []
    for case in cases():
        profile = "preview" if case["encoder_revision"] == "original" else "official"
        case["expected"] = ref.encode_messages(
            copy.deepcopy(case["messages"]), thinking_mode=case["thinking_mode"],
            drop_thinking=case["drop_thinking"], reasoning_effort=case["reasoning_effort"],
            reasoning_effort_profile=profile)
        out.append(case)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"generator": f"tools/make_encoder_goldens.py with sglang=={SGLANG_VERSION} "
                                f"{MODULE_PATH}", "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {os.path.relpath(OUT, ROOT)}")

    parsed = []
    for mode, text in parse_cases():
        entry = {"thinking_mode": mode, "text": text}
        try:
            entry["expected"] = ref.parse_message_from_completion_text(text, thinking_mode=mode)
        except (AssertionError, ValueError) as e:
            entry["error"] = str(e)
        parsed.append(entry)
    with open(PARSE_OUT, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"generator": f"tools/make_encoder_goldens.py with sglang=={SGLANG_VERSION} "
                                f"{MODULE_PATH} parse_message_from_completion_text",
                   "cases": parsed}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(parsed)} cases to {os.path.relpath(PARSE_OUT, ROOT)}")


if __name__ == "__main__":
    main()
