#!/usr/bin/env python3
"""Converts a dense Llama checkpoint (config.json + *.safetensors) to GGUF for the llama.cpp peer.

Needs numpy, pyyaml, sentencepiece and llama.cpp's own `gguf` package (the `gguf-py` folder of
the source tree, passed with --gguf-py). Weights keep their dtype (BF16, F16 or F32) unless
--dtype asks for another; norms are written as F32, as llama.cpp's converter does. q_proj and
k_proj rows are permuted into llama.cpp's interleaved rotary layout. Tensors that are not part of
the plain Llama graph (e.g. early-exit heads) are left out.

The vocabulary comes from tokenizer.model when it exists and matches vocab_size; otherwise a
placeholder vocabulary of the right size is written (enough for llama-bench, which feeds
random token ids).

  python3 bench/hf_to_gguf.py --model models/tessera-code-tiny --out /tmp/tiny.gguf \
      --gguf-py build/peer/llama.cpp/gguf-py
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"BF16": (np.uint16, 2), "F16": (np.float16, 2), "F32": (np.float32, 4)}


def read_safetensors(path):
    """Yields (name, dtype string, shape, numpy array view) for every tensor of one file."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        np_dtype, _ = DTYPES[info["dtype"]]
        yield name, info["dtype"], tuple(info["shape"]), data[begin:end].view(np_dtype).reshape(info["shape"])


def checkpoint_tensors(model_dir):
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors") and f != "golden.safetensors")
    for f in files:
        yield from read_safetensors(os.path.join(model_dir, f))


def to_f32(dtype, array):
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def from_f32(values, dtype):
    if dtype == "F32":
        return values.astype(np.float32)
    if dtype == "F16":
        return values.astype(np.float16)
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def permute_rotary(weights, heads):
    """HF's half-split rotary rows -> llama.cpp's interleaved pairs (per head)."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def gguf_name(hf_name):
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if len(parts) < 5 or parts[:2] != ["model", "layers"]:
        return None
    layer, rest = parts[2], ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm",
        "self_attn.q_proj.weight": "attn_q",
        "self_attn.k_proj.weight": "attn_k",
        "self_attn.v_proj.weight": "attn_v",
        "self_attn.o_proj.weight": "attn_output",
        "post_attention_layernorm.weight": "ffn_norm",
        "mlp.gate_proj.weight": "ffn_gate",
        "mlp.up_proj.weight": "ffn_up",
        "mlp.down_proj.weight": "ffn_down",
    }
    if rest not in table:
        return None
    return f"blk.{layer}.{table[rest]}.weight"


def add_vocabulary(writer, gguf, model_dir, config):
    vocab = config["vocab_size"]
    tokens, scores, types = None, None, None
    sp_path = os.path.join(model_dir, "tokenizer.model")
    if os.path.isfile(sp_path):
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=sp_path)
        if sp.get_piece_size() == vocab:
            tokens = [sp.id_to_piece(i).encode("utf-8") for i in range(vocab)]
            scores = [sp.get_score(i) for i in range(vocab)]
            types = []
            for i in range(vocab):
                if sp.is_unknown(i):
                    types.append(gguf.TokenType.UNKNOWN)
                elif sp.is_control(i):
                    types.append(gguf.TokenType.CONTROL)
                elif sp.is_byte(i):
                    types.append(gguf.TokenType.BYTE)
                else:
                    types.append(gguf.TokenType.NORMAL)
    if tokens is None:  # placeholder: <unk> <s> </s>, the 256 byte tokens, then plain pieces
        tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
        tokens += [f"\u2581t{i}".encode("utf-8") for i in range(vocab - len(tokens))]
        scores = [0.0] * vocab
        types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 259)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(int(config.get("bos_token_id") or 1))
    writer.add_eos_token_id(int(config.get("eos_token_id") or 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, *.safetensors)")
    p.add_argument("--out", required=True, help="GGUF file to write")
    p.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    p.add_argument("--dtype", choices=["keep", "bf16", "f16", "f32"], default="keep")
    a = p.parse_args()
    sys.path.insert(0, a.gguf_py)
    import gguf

    with open(os.path.join(a.model, "config.json")) as f:
        config = json.load(f)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if config.get("tie_word_embeddings"):
        sys.exit(f"{a.model}/config.json: tie_word_embeddings is not handled by this converter")

    writer = gguf.GGUFWriter(a.out, "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_vocab_size(config["vocab_size"])
    add_vocabulary(writer, gguf, a.model, config)

    quant = {"BF16": gguf.GGMLQuantizationType.BF16, "F16": gguf.GGMLQuantizationType.F16,
             "F32": gguf.GGMLQuantizationType.F32}
    file_type = None
    for name, dtype, shape, array in checkpoint_tensors(a.model):
        out_name = gguf_name(name)
        if out_name is None:
            print(f"skipping {name} (not part of the plain Llama graph)")
            continue
        target = dtype if a.dtype == "keep" else a.dtype.upper()
        if len(shape) == 1:
            target = "F32"
        values = array
        if target != dtype or name.endswith(("q_proj.weight", "k_proj.weight")):
            values = to_f32(dtype, array)
            if name.endswith("q_proj.weight"):
                values = permute_rotary(values, heads)
            elif name.endswith("k_proj.weight"):
                values = permute_rotary(values, kv_heads)
            values = from_f32(values, target)
        if len(shape) == 2:
            file_type = target
        writer.add_tensor(out_name, np.ascontiguousarray(values), raw_dtype=quant[target])
    writer.add_file_type({"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                          "BF16": gguf.LlamaFileType.MOSTLY_BF16}[file_type])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
