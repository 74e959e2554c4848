"""The seed's query script, rebuilt as a cold-start baseline for bench_cold: eager imports, the full CLAP model
(audio tower included), caption + fixed mood suffix, full argsort. Not part of the product.

    python benchmarks/seed_cold.py PHOTO BLIP_DIR CLAP_DIR LIBRARY_DIR
"""
import json
import sys

import librosa  # noqa: F401  (the seed imported its audio stack in the query script too)
import numpy as np
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor, ClapModel, ClapProcessor

photo, blip_dir, clap_dir, library = sys.argv[1:5]
blip_processor = BlipProcessor.from_pretrained(blip_dir)
blip = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
clap_processor = ClapProcessor.from_pretrained(clap_dir)
clap = ClapModel.from_pretrained(clap_dir).eval()
vectors = np.load(f"{library}/music_database.npy")
with open(f"{library}/music_database_metadata.json", encoding="utf-8") as f:
    tracks = json.load(f)["tracks"]
with torch.inference_mode():
    inputs = blip_processor(images=Image.open(photo).convert("RGB"), return_tensors="pt")
    caption = blip_processor.decode(blip.generate(**inputs, max_new_tokens=30)[0], skip_special_tokens=True)
    tokens = clap_processor.tokenizer([caption + ", calm mood"], return_tensors="pt", padding=True)
    vector = clap.get_text_features(**tokens).pooler_output[0].numpy()
order = np.argsort(-(vectors @ vector))[:10]
print(json.dumps({"caption": caption, "results": [tracks[i]["file_path"] for i in order]}))
