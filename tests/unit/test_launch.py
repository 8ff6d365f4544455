"""One launch description: spec + host + placement -> what llama-server is given, flags read once."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator.launch import ALL_LAYERS, READ_FLAGS, Launch, describe_launch, read_argv

MODELS = "/models"


def launch(*args: str, gpu: bool = True, **spec) -> Launch:
    return describe_launch(ModelSpec(name="m", model="m.gguf", args=args, **spec), gpu=gpu)


def test_defaults_are_llama_cpps():
    got = launch()
    assert (got.alias, got.model, got.hf_repo, got.mmproj) == ("m", "m.gguf", None, None)
    assert (got.ctx_size, got.parallel, got.gpu_layers) == (4096, 1, ALL_LAYERS)
    assert (got.cache_type_k, got.cache_type_v, got.batch_size, got.ubatch_size) == ("f16", "f16", 2048, 512)
    assert (got.flash_attn, got.split_mode, got.tensor_split, got.args, got.invalid) == ("auto", None, None, (), ())


@pytest.mark.parametrize(("gpu", "gpu_layers", "resolved"), [
    (True, "all", ALL_LAYERS), (True, 20, 20), (True, 0, 0), (False, "all", 0), (False, 20, 0),
])
def test_gpu_layers_are_resolved_for_the_host(gpu, gpu_layers, resolved):
    assert launch(gpu=gpu, gpu_layers=gpu_layers).gpu_layers == resolved


def test_the_spec_gives_source_context_and_slots():
    hf = describe_launch(ModelSpec(name="v", hf="o/r:Q4_K_M", mmproj="p/proj.gguf", ctx_size=0, parallel=8), gpu=False)
    assert (hf.model, hf.hf_repo, hf.mmproj, hf.ctx_size, hf.parallel) == (None, "o/r:Q4_K_M", "p/proj.gguf", 0, 8)


# -- each flag, in each spelling llama-server accepts ---------------------------

@pytest.mark.parametrize(("args", "field", "value"), [
    (("-ctk", "q8_0"), "cache_type_k", "q8_0"), (("--cache-type-k", "q4_0"), "cache_type_k", "q4_0"),
    (("--cache-type-k=q5_1",), "cache_type_k", "q5_1"), (("--cache_type_k", "q8_0"), "cache_type_k", "q8_0"),
    (("-ctv", "q4_0"), "cache_type_v", "q4_0"), (("--cache-type-v=iq4_nl",), "cache_type_v", "iq4_nl"),
    (("-b", "1024"), "batch_size", 1024), (("--batch-size=64",), "batch_size", 64),
    (("-ub", "128"), "ubatch_size", 128), (("--ubatch-size", "256"), "ubatch_size", 256),
    (("--ubatch_size=32",), "ubatch_size", 32),
    (("-fa", "on"), "flash_attn", "on"), (("--flash-attn", "off"), "flash_attn", "off"),
    (("--flash-attn=enabled",), "flash_attn", "on"), (("-fa", "0"), "flash_attn", "off"),
    (("-sm", "row"), "split_mode", "row"), (("--split-mode=none",), "split_mode", "none"),
    (("-ts", "3,1"), "tensor_split", (3.0, 1.0)), (("--tensor-split", "3/1/0.5"), "tensor_split", (3.0, 1.0, 0.5)),
])
def test_each_flag_form(args, field, value):
    got = launch(*args, "--jinja")
    assert getattr(got, field) == value
    assert got.args == (*args, "--jinja")  # passed on as written


# The tables the memory estimate kept for its own parsing, now read here.
@pytest.mark.parametrize(("args", "types"), [
    ((), ("f16", "f16")),
    (("--flash-attn", "on"), ("f16", "f16")),
    (("-ctk", "q8_0"), ("q8_0", "f16")),
    (("--cache-type-k", "q8_0"), ("q8_0", "f16")),
    (("-ctv", "q4_0"), ("f16", "q4_0")),
    (("--cache-type-v", "q4_0"), ("f16", "q4_0")),
    (("--cache-type-k=q5_1", "--cache-type-v=iq4_nl"), ("q5_1", "iq4_nl")),
    (("-ctk=q8_0", "-fa", "on", "-ctv", "q8_0"), ("q8_0", "q8_0")),
    (("-ctk", "q4_0", "--cache-type-k", "q8_0"), ("q8_0", "f16")),  # the last one wins
    (("-ctk",), ("f16", "f16")),  # llama-server refuses this; not our call
])
def test_cache_types(args, types):
    got = launch(*args)
    assert (got.cache_type_k, got.cache_type_v) == types


@pytest.mark.parametrize(("args", "sizes"), [
    ((), (2048, 512)), (("-b", "1024"), (1024, 512)), (("--ubatch-size", "256"), (2048, 256)),
    (("-ub=128", "-b=64"), (64, 128)),
])
def test_batch_sizes(args, sizes):
    got = launch(*args)
    assert (got.batch_size, got.ubatch_size) == sizes and not got.invalid


@pytest.mark.parametrize(("args", "mode"), [
    ((), "auto"), (("-fa", "on"), "on"), (("--flash-attn", "off"), "off"), (("--flash-attn=auto",), "auto"),
    (("-fa",), "on"), (("-fa", "-ctk", "q8_0"), "on"), (("-fa", "off", "-fa", "1"), "on"),
])
def test_flash_attn_mode(args, mode):
    assert launch(*args).flash_attn == mode


@pytest.mark.parametrize("args", [("-ub", "many"), ("-b", "0"), ("--batch-size=-5",), ("-ts", "a,b")])
def test_values_llama_server_refuses_are_told_not_raised(args):
    """The container is still made (llama-server's own message is the better one); the estimate gives up."""
    got = launch(*args)
    assert got.invalid and got.args == args


def test_flags_it_does_not_read_pass_through_untouched():
    args = ("--jinja", "-ot", "exps=CPU", "--temp", "0.7", "--no-webui")
    got = launch(*args)
    assert got.args == args and got == dataclasses.replace(launch(), args=args)


# -- placement ---------------------------------------------------------------------

def test_placement_on_several_gpus_adds_the_layer_split_after_the_specs_args():
    spec = ModelSpec(name="m", model="m.gguf", args=("-ts", "9,1", "--jinja"))
    got = describe_launch(spec, gpu=True, placement=Placement(gpus=(0, 1), tensor_split=(4800, 10560)))
    assert (got.split_mode, got.tensor_split) == ("layer", (4800, 10560))  # the placement wins: it comes last
    assert got.args == ("-ts", "9,1", "--jinja", "--split-mode", "layer", "--tensor-split", "4800,10560")
    even = describe_launch(spec.model_copy(update={"args": ()}), gpu=True, placement=Placement(gpus=(2, 3)))
    assert even.tensor_split == (1, 1) and even.args[-1] == "1,1"


def test_one_gpu_or_no_gpu_adds_no_split():
    spec = ModelSpec(name="m", model="m.gguf")
    assert describe_launch(spec, gpu=True, placement=Placement(gpus=(1,))) == describe_launch(spec, gpu=True)
    assert describe_launch(spec, gpu=False, placement=Placement(gpus=(0, 1))) == describe_launch(spec, gpu=False)


# -- the command line ---------------------------------------------------------------

def test_argv_is_llamadocks_flags_then_the_rest_as_written():
    spec = ModelSpec(name="v", model="d/v.gguf", mmproj="proj.gguf", ctx_size=8192, parallel=2, gpu_layers=20,
                     args=("-fa", "--cache_type_k=q8_0"))
    assert describe_launch(spec, gpu=True).argv(models_dir=MODELS) == [
        "--alias", "v", "--model", "/models/d/v.gguf", "--mmproj", "/models/proj.gguf", "--ctx-size", "8192",
        "--n-gpu-layers", "20", "--parallel", "2", "--metrics", "--slots", "-fa", "--cache_type_k=q8_0"]
    hf = describe_launch(ModelSpec(name="h", hf="o/r"), gpu=False).argv(models_dir=MODELS)
    assert hf[:4] == ["--alias", "h", "--hf-repo", "o/r"] and "--model" not in hf


def test_read_argv_refuses_what_is_not_a_launch():
    with pytest.raises(ValueError):
        read_argv(["--model", "/models/m.gguf"], models_dir=MODELS)
    with pytest.raises(ValueError):
        read_argv(launch().argv(models_dir="/elsewhere"), models_dir=MODELS)


# -- argv() round-trips through the parser --------------------------------------------

FLAG_VALUES = {"cache_type_k": ["q8_0", "q4_0"], "cache_type_v": ["q8_0", "f16"], "batch_size": ["1024", "64"],
               "ubatch_size": ["256", "many"], "flash_attn": ["on", "off", "auto", "1"],
               "split_mode": ["row", "layer"], "tensor_split": ["3,1", "1/2"]}


@st.composite
def flag_args(draw) -> tuple[str, ...]:
    out: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        flag = draw(st.sampled_from(sorted(READ_FLAGS) + ["--jinja", "--temp", "--cache_type_v"]))
        key = READ_FLAGS.get(flag.replace("_", "-"))
        if key is None:
            out += [flag] if flag == "--jinja" else [flag, "0.7"]
            continue
        value = draw(st.sampled_from(FLAG_VALUES[key]))
        form = draw(st.sampled_from(["space", "equals"] + (["bare"] if key == "flash_attn" else [])))
        out += [flag] if form == "bare" else [f"{flag}={value}"] if form == "equals" else [flag, value]
    return tuple(out)


specs = st.builds(
    ModelSpec, name=st.just("m"),
    model=st.sampled_from(["m.gguf", "sub/m-q4.gguf"]), mmproj=st.sampled_from([None, "proj.gguf"]),
    ctx_size=st.sampled_from([0, 4096, 32768]), parallel=st.integers(1, 64),
    gpu_layers=st.one_of(st.just("all"), st.integers(0, 200)), args=flag_args())
placements = st.one_of(st.none(), st.builds(Placement, gpus=st.sampled_from([(0,), (0, 1), (1, 2, 3)])))


@settings(max_examples=300, deadline=None)
@given(spec=specs, gpu=st.booleans(), placement=placements)
def test_argv_round_trips_through_the_parser(spec, gpu, placement):
    described = describe_launch(spec, gpu=gpu, placement=placement)
    assert read_argv(described.argv(models_dir=MODELS), models_dir=MODELS) == described
    # with the host and port a backend puts in front, as a container's command has them
    assert read_argv(["--host", "0.0.0.0", "--port", "8080", *described.argv(models_dir=MODELS)],
                     models_dir=MODELS) == described
    # with the slot directory llamadock adds for the KV cache keeper
    assert read_argv(described.argv(models_dir=MODELS, kv_dir="/kv"), models_dir=MODELS) == described
    # and the args it passes on, given again as a spec's args, read the same
    again = describe_launch(spec.model_copy(update={"args": described.args}), gpu=gpu)
    assert again == described
