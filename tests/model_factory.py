"""Builds random-weight BLIP-captioning and CLAP checkpoints with real, locally built processors for tests and benchmarks."""

import pathlib

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
    "beautiful pretty quiet empty busy crowded old modern open closed wet dry cold hot sunny cloudy "
    "snowy misty foggy shiny blurry clear deep high low top bottom front back side middle center "
    "together alone outside inside background foreground mood feeling atmosphere style vintage "
    "black-and-white very"
).split()

# Every ASCII letter and digit, alone and as a continuation piece, so any lowercase word
# tokenizes to WordPiece fragments instead of [UNK].
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCTUATION = ".,!?'\"-:;()&/"


def _unique(words):
    return list(dict.fromkeys(words))


def _out_dir(out_dir):
    path = pathlib.Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_size(size):
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")


def _blip_tokenizer():
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += _unique(w for w in COMMON_WORDS + MOOD_WORDS + MUSIC_WORDS if w not in tokens)
    tokens += [c for c in _CHARS + _PUNCTUATION if c not in tokens]
    tokens += ["##" + c for c in _CHARS]
    vocab = {token: index for index, token in enumerate(tokens)}
    # Mirrors Salesforce/blip-image-captioning-base: [DEC] starts every caption, [ENC] is
    # reserved for the ITM encoder; both are added tokens after the WordPiece vocabulary.
    return BertTokenizer(
        vocab=vocab,
        do_lower_case=True,
        bos_token="[DEC]",
        extra_special_tokens=["[ENC]"],
        model_max_length=512,
    )


def _blip_config(size, tokenizer):
    token_ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        # generate() stops on sep_token_id; eos only fills the placeholder it slices off.
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if size == "full":
        # BlipConfig() defaults, except 12 text heads as in the released checkpoint (same FLOPs).
        return BlipConfig(text_config=dict(num_attention_heads=12, **token_ids))
    return BlipConfig(
        vision_config=dict(
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
            max_position_embeddings=64,
            **token_ids,
        ),
        projection_dim=24,
        image_text_hidden_size=24,
    )


def build_blip_checkpoint(out_dir, size="tiny", seed=0):
    """Write a random-weight BlipForConditionalGeneration plus BlipProcessor to out_dir.

    size "tiny" is a few-kilobyte model for unit tests; "full" has the architecture and compute
    of Salesforce/blip-image-captioning-base (384 px ViT-B/16 encoder, BERT-base decoder).
    The same seed always yields the same weights. Returns the directory as a Path.
    """
    _check_size(size)
    path = _out_dir(out_dir)
    tokenizer = _blip_tokenizer()
    config = _blip_config(size, tokenizer)
    image_size = config.vision_config.image_size
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _clap_corpus():
    subjects = MOOD_WORDS + MUSIC_WORDS
    lines = [
        f"a {mood} {music} {kind}"
        for mood in MOOD_WORDS
        for music in MUSIC_WORDS
        for kind in ("song", "track")
    ]
    lines += [f"a photo of the {word} with a {mood} mood" for word in COMMON_WORDS for mood in MOOD_WORDS[:4]]
    lines += [f"The sound of {word}. This is {word}!" for word in subjects + COMMON_WORDS]
    return lines


def _clap_tokenizer(model_max_length):
    special_tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_clap_corpus(), trainer=trainer)
    trained = bpe.model
    vocab = bpe.get_vocab()
    merges = [tuple(merge) for merge in _bpe_merges(bpe)]
    del trained
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _bpe_merges(bpe):
    import json

    return json.loads(bpe.to_str())["model"]["merges"]


def _clap_config(size, vocab_size):
    if size == "full":
        return ClapConfig()
    return ClapConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=130,
        ),
        audio_config=dict(
            spec_size=256,
            num_mel_bins=64,
            patch_embeds_hidden_size=8,
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            hidden_size=64,
            window_size=8,
            enable_fusion=False,
        ),
        projection_dim=24,
    )


def _clap_feature_extractor():
    # laion/clap-htsat-unfused's preprocessor_config: 10 s at 48 kHz, 64 slaney mel bins.
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
    """Write a random-weight ClapModel plus ClapProcessor to out_dir.

    size "tiny" is a small HTSAT/RoBERTa pair with projection_dim 24; "full" has the architecture
    and compute of laion/clap-htsat-unfused (projection_dim 512). The directory also loads as
    ClapTextModelWithProjection or ClapAudioModelWithProjection. The same seed always yields the
    same weights. Returns the directory as a Path.
    """
    _check_size(size)
    path = _out_dir(out_dir)
    config = _clap_config(size, vocab_size=1000)
    tokenizer = _clap_tokenizer(model_max_length=config.text_config.max_position_embeddings - 2)
    processor = ClapProcessor(feature_extractor=_clap_feature_extractor(), tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
