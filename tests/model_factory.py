"""Random-weight BLIP-captioning and CLAP checkpoints with real local processors, for tests and benchmarks."""

import contextlib
import itertools
import json
import pathlib
import string

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    RobertaTokenizerFast,
)
from transformers.utils import logging as hf_logging

SIZES = ("tiny", "full")

MOOD_WORDS = (
    "happy joyful cheerful calm peaceful serene relaxing dreamy romantic tender nostalgic melancholic sad "
    "lonely dark mysterious tense dramatic epic energetic upbeat playful festive warm cozy bright "
    "adventurous triumphant"
).split()

MUSIC_WORDS = (
    "piano guitar drums jazz ambient acoustic electronic beat song music melody rhythm bass violin "
    "strings synth vocals choir orchestra cinematic soundtrack lofi folk rock pop classical tempo "
    "slow fast loud soft track sound"
).split()

COMMON_WORDS = (
    "a an the of with and in on at by for from to into over under near behind next is are was "
    "photo picture image view close up shot scene portrait landscape painting drawing there it its "
    "this that some two three many several his her their young old small large big little tall long "
    "short wide new man woman men women person people boy girl child children baby family friends "
    "couple crowd dog dogs cat cats bird birds horse cow sheep fish animal animals sky clouds cloud "
    "sun sunset sunrise moon stars rain snow fog storm wind beach sea ocean water wave waves lake "
    "river mountain mountains hill hills forest tree trees flower flowers grass field garden park "
    "road street city town building buildings house houses bridge tower car cars bus train boat "
    "bike window door room kitchen table chair bed sofa wall floor light lights lamp candle fire "
    "night day morning evening afternoon summer winter autumn spring food cake coffee cup glass "
    "plate book phone computer screen camera ball toy hat shirt dress coat umbrella bag sign "
    "red blue green yellow orange purple pink brown black white gray grey golden silver colorful "
    "sitting standing walking running playing holding looking smiling dancing singing reading "
    "eating drinking riding flying swimming lying sleeping talking wearing covered filled "
    "beautiful pretty quiet empty busy crowded modern open closed wet dry cold hot sunny cloudy "
    "snowy misty foggy shiny blurry clear deep high low top bottom front back side middle center "
    "together alone outside inside background foreground mood feeling atmosphere style vintage very"
).split()

# The released BLIP captioner's text vocabulary: 30522 BERT WordPieces, then [DEC] and [ENC].
_BLIP_FULL_WORDPIECES = 30522


def _check_size(size):
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")


@contextlib.contextmanager
def _saving(out_dir):
    """Yield out_dir as a created Path, without save_pretrained's per-call progress bar."""
    path = pathlib.Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield path
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _wordpiece_vocab(pad_to):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += COMMON_WORDS + MOOD_WORDS + MUSIC_WORDS
    # Single characters, alone and as continuations, keep any lowercase word out of [UNK].
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = dict.fromkeys(tokens)
    if pad_to is not None:
        # Random full-size weights emit ids from the whole range; letter n-grams make every one
        # of them decode to text instead of silently vanishing from the caption.
        fillers = (
            prefix + "".join(letters)
            for n in (2, 3)
            for letters in itertools.product(string.ascii_lowercase, repeat=n)
            for prefix in ("##", "")
        )
        for filler in fillers:
            if len(vocab) == pad_to:
                break
            vocab.setdefault(filler)
    return {token: index for index, token in enumerate(vocab)}


def _blip_tokenizer(size):
    # Same special tokens as Salesforce/blip-image-captioning-base: captions start with [DEC]
    # and [ENC] is reserved for the ITM encoder, both added after the WordPiece vocabulary.
    return BertTokenizer(
        vocab=_wordpiece_vocab(_BLIP_FULL_WORDPIECES if size == "full" else None),
        do_lower_case=True,
        bos_token="[DEC]",
        extra_special_tokens=["[ENC]"],
        model_max_length=512,
    )


def _blip_config(size, tokenizer):
    token_ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        # generate() stops on sep_token_id; eos_token_id only fills a placeholder it slices off.
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # BlipVisionConfig's default initializer_range (1e-10) makes random vision weights ~0, so every image
    # would give the same features; 0.02 (the text side's) lets random weights still tell images apart.
    if size == "full":
        # BlipConfig() defaults, but 12 text heads like the released checkpoint (same FLOPs as 8).
        return BlipConfig(vision_config=dict(initializer_range=0.02),
                          text_config=dict(num_attention_heads=12, **token_ids))
    return BlipConfig(
        vision_config=dict(
            initializer_range=0.02,
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            **token_ids,
        ),
    )


def build_blip_checkpoint(out_dir, size="tiny", seed=0):
    """Write a random-weight BlipForConditionalGeneration and its BlipProcessor to out_dir.

    size="tiny" is a ~75k-parameter model on 32 px images for unit tests; size="full" has the
    architecture and compute of Salesforce/blip-image-captioning-base (384 px ViT-B/16 encoder,
    BERT-base decoder, 30524-token vocabulary). The tokenizer is a real BertTokenizer with
    BLIP's special tokens and the config's bos/sep/pad ids match it. Weights depend only on
    seed. Returns out_dir as a Path.
    """
    _check_size(size)
    tokenizer = _blip_tokenizer(size)
    config = _blip_config(size, tokenizer)
    side = config.vision_config.image_size
    # The PIL backend needs no torchvision; it saves the same "BlipImageProcessor" config,
    # so AutoProcessor later picks whichever backend is installed.
    image_processor = BlipImageProcessorPil(size={"height": side, "width": side})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    with _saving(out_dir) as path:
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return path


def _clap_corpus():
    lines = [f"a {mood} {music} song" for mood in MOOD_WORDS for music in MUSIC_WORDS]
    lines += [f"a {mood} {music} track" for mood in MOOD_WORDS for music in MUSIC_WORDS]
    lines += [f"a photo of the {word} with a {mood} mood" for word in COMMON_WORDS for mood in MOOD_WORDS[:4]]
    lines += [f"The sound of {word}. This is {word}!" for word in MOOD_WORDS + MUSIC_WORDS + COMMON_WORDS]
    return lines


def _clap_tokenizer():
    special_tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_clap_corpus(), trainer=trainer)
    # Rebuilding from vocab and merges lets RobertaTokenizerFast attach its own byte-level
    # decoder and <s> ... </s> post-processor, exactly as for roberta-base.
    trained = json.loads(bpe.to_str())["model"]
    return RobertaTokenizerFast(
        vocab=trained["vocab"],
        merges=[tuple(merge) for merge in trained["merges"]],
        model_max_length=512,
    )


def _clap_config(size, tokenizer):
    if size == "full":
        return ClapConfig()
    patch_width, depths = 8, [1, 1, 1, 1]
    return ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            # RoBERTa positions start after the padding id, so 512 tokens need 514 slots.
            max_position_embeddings=tokenizer.model_max_length + 2,
        ),
        audio_config=dict(
            spec_size=256,
            num_mel_bins=64,
            patch_embeds_hidden_size=patch_width,
            depths=depths,
            num_attention_heads=[1, 1, 2, 2],
            # The audio projection reads hidden_size, which must be the last stage's width.
            hidden_size=patch_width * 2 ** (len(depths) - 1),
            num_hidden_layers=len(depths),
            window_size=8,
            enable_fusion=False,
        ),
        # Not the released 512, so callers must read the dimension from the checkpoint.
        projection_dim=24,
    )


def _clap_feature_extractor():
    # laion/clap-htsat-unfused's preprocessor_config: 10 s windows at 48 kHz, 64 mel bins.
    return ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        top_db=None,
        padding="repeatpad",
        truncation="rand_trunc",
    )


def build_clap_checkpoint(out_dir, size="tiny", seed=0):
    """Write a random-weight ClapModel and its ClapProcessor to out_dir.

    size="tiny" is a ~150k-parameter HTSAT/RoBERTa pair with projection_dim 24; size="full" has
    the architecture and compute of laion/clap-htsat-unfused (projection_dim 512). Either way
    the feature extractor is the unfused checkpoint's (48 kHz, 64 mels, 10 s), the tokenizer a
    real byte-level BPE RobertaTokenizerFast, and the directory also loads as
    ClapTextModelWithProjection or ClapAudioModelWithProjection. Weights depend only on seed.
    Returns out_dir as a Path.
    """
    _check_size(size)
    tokenizer = _clap_tokenizer()
    config = _clap_config(size, tokenizer)
    processor = ClapProcessor(feature_extractor=_clap_feature_extractor(), tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = ClapModel(config)
    with _saving(out_dir) as path:
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return path
