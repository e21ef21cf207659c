"""A deterministic synthetic catalogue whose text carries what users want.

Each item has a topic, a product noun and a popularity; its title is built from words of that
topic. Each user prefers one to three topics; a sequence stays on its topic, often on the same
noun, and drifts to another preferred (rarely any) topic. So text alone predicts much of the next
item (shared topic and noun words), and interactions add popularity and drift that text lacks.
"""

from __future__ import annotations

import numpy as np

from .._errors import DataError
from ._dataset import Dataset
from ._text import TextTemplate

# topic: (adjectives, nouns)
_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "garden": (("green", "hardy", "organic", "flowering"), ("seeds", "shovel", "planter", "hose", "trowel", "compost")),
    "kitchen": (
        ("nonstick", "ceramic", "steel", "stackable"),
        ("skillet", "saucepan", "whisk", "knife", "spatula", "colander"),
    ),
    "coffee": (("roasted", "espresso", "arabica", "decaf"), ("beans", "grinder", "kettle", "filter", "mug", "press")),
    "hiking": (
        ("waterproof", "ultralight", "trail", "alpine"),
        ("boots", "backpack", "tent", "poles", "jacket", "headlamp"),
    ),
    "cycling": (("carbon", "aero", "tubeless", "gravel"), ("helmet", "saddle", "pedals", "tyre", "gloves", "pump")),
    "baking": (
        ("sourdough", "gluten-free", "vanilla", "buttery"),
        ("flour", "yeast", "mixer", "tin", "scale", "rolling-pin"),
    ),
    "office": (
        ("ergonomic", "adjustable", "recycled", "refillable"),
        ("stapler", "notebook", "pens", "binder", "desk-lamp", "chair"),
    ),
    "gaming": (
        ("wireless", "mechanical", "rgb", "competitive"),
        ("keyboard", "mouse", "headset", "controller", "monitor", "console"),
    ),
    "music": (
        ("acoustic", "vintage", "studio", "analog"),
        ("guitar", "strings", "amplifier", "microphone", "synth", "drumsticks"),
    ),
    "fitness": (
        ("adjustable", "foldable", "non-slip", "heavy-duty"),
        ("dumbbells", "yoga-mat", "kettlebell", "treadmill", "bands", "bench"),
    ),
    "baby": (
        ("soft", "hypoallergenic", "washable", "gentle"),
        ("stroller", "onesie", "bottle", "crib", "blanket", "teether"),
    ),
    "pets": (("chewable", "grain-free", "cozy", "durable"), ("leash", "kibble", "collar", "litter", "bed", "catnip")),
    "photography": (
        ("mirrorless", "full-frame", "telephoto", "prime"),
        ("camera", "lens", "tripod", "flash", "filter", "bag"),
    ),
    "reading": (
        ("bestselling", "illustrated", "hardcover", "classic"),
        ("novel", "biography", "atlas", "anthology", "cookbook", "poems"),
    ),
    "skincare": (
        ("fragrance-free", "hydrating", "vegan", "mineral"),
        ("serum", "moisturizer", "cleanser", "sunscreen", "toner", "mask"),
    ),
    "tools": (
        ("cordless", "magnetic", "professional", "compact"),
        ("drill", "wrench", "screwdriver", "saw", "level", "pliers"),
    ),
    "travel": (
        ("carry-on", "lightweight", "anti-theft", "packable"),
        ("suitcase", "passport-wallet", "pillow", "adapter", "organizer", "duffel"),
    ),
    "tea": (("loose-leaf", "oolong", "herbal", "matcha"), ("teapot", "infuser", "sampler", "cups", "tin", "whisk")),
    "painting": (
        ("watercolor", "acrylic", "oil", "archival"),
        ("brushes", "canvas", "easel", "palette", "paints", "sketchbook"),
    ),
    "camping": (
        ("insulated", "portable", "solar", "rugged"),
        ("stove", "cooler", "lantern", "sleeping-bag", "hammock", "chair"),
    ),
    "swimming": (
        ("chlorine-resistant", "anti-fog", "quick-dry", "competition"),
        ("goggles", "swimsuit", "cap", "kickboard", "towel", "fins"),
    ),
    "smart-home": (
        ("voice-controlled", "wifi", "motion-sensing", "energy-saving"),
        ("bulb", "plug", "thermostat", "doorbell", "camera", "speaker"),
    ),
    "cleaning": (
        ("biodegradable", "streak-free", "cordless", "scented"),
        ("vacuum", "mop", "detergent", "sponges", "duster", "spray"),
    ),
    "board-games": (
        ("cooperative", "strategy", "family", "party"),
        ("dice", "card-game", "puzzle", "chess-set", "expansion", "tokens"),
    ),
}
_BRANDS = ("Acme", "Nordvik", "Solano", "Kestrel", "Brightline", "Oakhurst", "Velora", "Tamarack",
           "Lumen", "Corvid", "Halcyon", "Pinecrest", "Rivet", "Sable", "Zephyr", "Marlow")
_EXTRAS = ("set", "pack", "kit", "bundle", "edition", "classic", "deluxe", "mini", "pro", "plus")
# Words of the long descriptions (`words=N`): product-page prose around the item's own topic words.
_PROSE = ("designed", "for", "everyday", "use", "with", "a", "durable", "finish", "and", "easy", "care", "the",
          "perfect", "gift", "quality", "materials", "ships", "in", "recyclable", "packaging", "includes",
          "warranty", "comfortable", "reliable", "modern", "look", "fits", "most", "spaces", "lightweight",
          "compact", "storage", "made", "to", "last", "great", "value", "simple", "setup", "our", "best")


def parse_synthetic_spec(spec: str) -> dict[str, int]:
    """`items=N,users=M,seed=S` (all optional) to keyword arguments, naming a bad key or value."""
    args = {"items": 2000, "users": 1000, "seed": 0, "words": 0}
    for part in filter(None, spec.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in args:
            raise DataError(f"synthetic: unknown parameter {part!r} (expected items=N, users=M, seed=S, words=W)")
        try:
            args[key] = int(value)
        except ValueError:
            raise DataError(f"synthetic: {key} must be an integer, got {value!r}") from None
    if not 1 <= args["items"] <= 1_000_000:
        raise DataError(f"synthetic: items must be in 1..1000000, got {args['items']}")
    if not 0 <= args["users"] <= 1_000_000:
        raise DataError(f"synthetic: users must be in 0..1000000, got {args['users']}")
    if not 0 <= args["words"] <= 2000:
        raise DataError(f"synthetic: words must be in 0..2000, got {args['words']}")
    return args


def synthetic(items: int = 2000, users: int = 1000, seed: int = 0, words: int = 0) -> Dataset:
    """Generate `items` items and `users` users (sequences of up to 60 items, 3 or more unless the
    catalogue runs out), deterministic in `seed`. `words` > 0 adds a description of about that many
    words to every item (a catalogue of long texts); everything else stays the same."""
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    n_topics = len(topics)
    item_topic = rng.integers(0, n_topics, items)
    item_noun = rng.integers(0, 6, items)
    item_adj = rng.integers(0, 4, items)
    item_brand = rng.integers(0, len(_BRANDS), items)
    item_extra = rng.integers(0, len(_EXTRAS), items)
    popularity = rng.pareto(1.2, items) + 1.0

    item_ids = [f"i{k}" for k in range(items)]
    metas, texts = [], []
    template = TextTemplate(("title", "category") + (("description",) if words else ()), sep=". ")
    prose = np.random.default_rng([seed, 1])  # its own stream: the rest is the same with or without words
    for k in range(items):
        adjs, nouns = _TOPICS[topics[item_topic[k]]]
        title = f"{_BRANDS[item_brand[k]]} {adjs[item_adj[k]]} {nouns[item_noun[k]]} {_EXTRAS[item_extra[k]]} {k % 997}"
        meta = {"title": title, "category": topics[item_topic[k]].replace("-", " "), "brand": _BRANDS[item_brand[k]]}
        if words:
            vocab = _PROSE + adjs + nouns
            meta["description"] = " ".join(vocab[j] for j in prose.integers(0, len(vocab), words)).capitalize() + "."
        metas.append(meta)
        texts.append(template.render(meta))

    # Popularity-weighted samplers per topic and per (topic, noun): cumulative sums + searchsorted.
    def sampler(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(mask)
        return idx, np.cumsum(popularity[idx])

    by_topic = [sampler(item_topic == t) for t in range(n_topics)]
    by_noun = {(t, n): sampler((item_topic == t) & (item_noun == n)) for t in range(n_topics) for n in range(6)}

    def draw(pool: tuple[np.ndarray, np.ndarray]) -> int:
        idx, cum = pool
        if len(idx) == 0:
            return -1
        return int(idx[min(np.searchsorted(cum, rng.random() * cum[-1]), len(idx) - 1)])

    user_ids, sequences = [], []
    for u in range(users):
        prefs = rng.choice(n_topics, size=rng.integers(1, 4), replace=False)
        length = int(min(3 + rng.geometric(0.08), 60, max(3, items)))
        topic, seq, seen = int(prefs[0]), list[int](), set[int]()
        for _ in range(length * 3):
            if len(seq) == length:
                break
            r = rng.random()
            if r < 0.05:
                topic = int(rng.integers(0, n_topics))
            elif r < 0.25:
                topic = int(rng.choice(prefs))
            if seq and rng.random() < 0.5:
                item = draw(by_noun[(int(item_topic[seq[-1]]), int(item_noun[seq[-1]]))])
            else:
                item = draw(by_topic[topic])
            if item >= 0 and item not in seen:
                seen.add(item)
                seq.append(item)
        if len(seq) >= 1:
            user_ids.append(f"u{u}")
            sequences.append(np.asarray(seq, dtype=np.int64))
    return Dataset(
        name=f"synthetic-{items}x{users}-s{seed}" + (f"-w{words}" if words else ""),
        item_ids=item_ids,
        item_texts=texts,
        item_meta=metas,
        user_ids=user_ids,
        sequences=sequences,
        timestamps=[np.arange(len(s), dtype=np.float64) for s in sequences],
        template=template.spec(),
    )
