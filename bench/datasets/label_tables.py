"""The built-in tables: which ImageNet-1k classes depict each class of Pascal VOC, CIFAR-10 and COCO.

Written with ImageNet class *names* (see ``bench.datasets.imagenet``) and
resolved to output indices by ``bench.datasets.label_maps``, so a misspelt name
fails loudly instead of pointing at the wrong output. The reasons for the
non-obvious choices are in docs/label_maps.md; a class without counterpart
carries its reason here, and the reason travels to the results.
"""

from __future__ import annotations

from bench.datasets.imagenet import imagenet_span

# Concepts that the vocabularies share: one definition, so the sets cannot drift apart.
AIRCRAFT = ("airliner", "warplane", "wing")
BIRDS = (
    *imagenet_span("cock", "great grey owl"),  # 7..24: fowl, ostrich, finches, corvids, raptors, owl
    *imagenet_span("black grouse", "black swan"),  # 80..100: game birds, parrots, hummingbird, waterfowl
    *imagenet_span("white stork", "albatross"),  # 127..146: storks, herons, waders, pelican, penguin
)
CATS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")  # domestic cats only
DOGS = imagenet_span("Chihuahua", "Mexican hairless")  # 151..268: the domestic breeds, no wolves or foxes
HORSES = ("sorrel",)
WATERCRAFT = (
    "aircraft carrier",
    "canoe",
    "catamaran",
    "container ship",
    "fireboat",
    "gondola",
    "lifeboat",
    "liner",
    "paddlewheel",
    "pirate",  # pirate ship
    "schooner",
    "speedboat",
    "submarine",
    "trimaran",
    "wreck",  # a wrecked ship
    "yawl",
)
PASSENGER_CARS = (
    "beach wagon",
    "cab",
    "convertible",
    "jeep",
    "limousine",
    "minivan",
    "Model T",
    "racer",
    "sports car",
)
BICYCLES = ("bicycle-built-for-two", "mountain bike", "tricycle", "unicycle")
BOTTLES = ("beer bottle", "nipple", "pill bottle", "pop bottle", "water bottle", "wine bottle")
BUSES = ("minibus", "school bus", "trolleybus")
CHAIRS = ("barber chair", "folding chair", "rocking chair", "throne")
MOTORBIKES = ("moped", "motor scooter")
SHEEP = ("ram", "bighorn")
TRAINS = ("bullet train", "electric locomotive", "freight car", "passenger car", "steam locomotive")
BIG_TRUCKS = ("fire engine", "garbage truck", "moving van", "tow truck", "trailer truck")
SCREENS = ("desktop computer", "monitor", "screen", "television")

NO_PERSON = (
    "ImageNet-1k has no person class (ballplayer, groom and scuba diver are roles in settings, see docs/label_maps.md)"
)

#: Pascal VOC class -> ImageNet-1k class names (label order of VOC).
VOC_NAMES: dict[str, tuple[str, ...]] = {
    "aeroplane": AIRCRAFT,
    "bicycle": BICYCLES,
    "bird": BIRDS,
    "boat": WATERCRAFT,
    "bottle": BOTTLES,
    "bus": BUSES,
    "car": (*PASSENGER_CARS, "ambulance", "pickup", "police van"),
    "cat": CATS,
    "chair": CHAIRS,
    "cow": ("ox",),
    "diningtable": ("dining table",),
    "dog": DOGS,
    "horse": HORSES,
    "motorbike": MOTORBIKES,
    "person": (),
    "pottedplant": ("pot",),  # "pot, flowerpot"
    "sheep": SHEEP,
    "sofa": ("studio couch",),
    "train": TRAINS,
    "tvmonitor": SCREENS,
}
VOC_REASONS = {"person": NO_PERSON}

#: CIFAR-10 class -> ImageNet-1k class names (label order of CIFAR-10).
CIFAR10_NAMES: dict[str, tuple[str, ...]] = {
    "airplane": AIRCRAFT,
    "automobile": PASSENGER_CARS,
    "bird": BIRDS,
    "cat": CATS,
    "deer": (),
    "dog": DOGS,
    "frog": ("bullfrog", "tree frog", "tailed frog"),
    "horse": HORSES,
    "ship": WATERCRAFT,
    "truck": BIG_TRUCKS,
}
CIFAR10_REASONS = {"deer": "ImageNet-1k has no deer (hartebeest, impala and gazelle are antelopes)"}

#: COCO 2017 category -> ImageNet-1k class names (COCO's category order).
COCO_NAMES: dict[str, tuple[str, ...]] = {
    "person": (),
    "bicycle": BICYCLES,
    "car": PASSENGER_CARS,
    "motorcycle": MOTORBIKES,
    "airplane": AIRCRAFT,
    "bus": BUSES,
    "train": (*TRAINS, "streetcar"),
    "truck": (*BIG_TRUCKS, "pickup"),
    "boat": WATERCRAFT,
    "traffic light": ("traffic light",),
    "fire hydrant": (),
    "stop sign": ("street sign",),
    "parking meter": ("parking meter",),
    "bench": ("park bench",),
    "bird": BIRDS,
    "cat": CATS,
    "dog": DOGS,
    "horse": HORSES,
    "sheep": SHEEP,
    "cow": ("ox",),
    "elephant": ("Indian elephant", "African elephant", "tusker"),
    "bear": ("brown bear", "American black bear", "ice bear", "sloth bear", "giant panda"),
    "zebra": ("zebra",),
    "giraffe": (),
    "backpack": ("backpack",),
    "umbrella": ("umbrella",),
    "handbag": ("purse",),
    "tie": ("Windsor tie", "bow tie", "bolo tie"),
    "suitcase": (),
    "frisbee": (),
    "skis": ("ski",),
    "snowboard": (),
    "sports ball": (
        "baseball",
        "basketball",
        "croquet ball",
        "golf ball",
        "ping-pong ball",
        "rugby ball",
        "soccer ball",
        "tennis ball",
        "volleyball",
    ),
    "kite": (),
    "baseball bat": (),
    "baseball glove": (),
    "skateboard": (),
    "surfboard": (),
    "tennis racket": ("racket",),
    "bottle": BOTTLES,
    "wine glass": ("goblet",),
    "cup": ("coffee mug", "cup"),
    "fork": (),
    "knife": ("cleaver",),
    "spoon": ("wooden spoon",),
    "bowl": ("mixing bowl", "soup bowl"),
    "banana": ("banana",),
    "apple": ("Granny Smith",),
    "sandwich": ("cheeseburger",),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": (),
    "hot dog": ("hotdog",),
    "pizza": ("pizza",),
    "donut": (),
    "cake": (),
    "chair": CHAIRS,
    "couch": ("studio couch",),
    "potted plant": ("pot",),
    "bed": ("four-poster",),
    "dining table": ("dining table",),
    "toilet": ("toilet seat",),
    "tv": SCREENS,
    "laptop": ("laptop", "notebook"),
    "mouse": ("mouse",),  # the computer mouse: ImageNet-1k has no rodent called mouse
    "remote": ("remote control",),
    "keyboard": ("computer keyboard", "space bar"),
    "cell phone": ("cellular telephone",),
    "microwave": ("microwave",),
    "oven": ("stove",),
    "toaster": ("toaster",),
    "sink": ("washbasin",),
    "refrigerator": ("refrigerator",),
    "book": ("book jacket", "comic book"),
    "clock": ("analog clock", "digital clock", "wall clock"),
    "vase": ("vase",),
    "scissors": (),
    "teddy bear": ("teddy",),
    "hair drier": ("hand blower",),  # "hand blower, blow dryer, blow drier, hair dryer, hair drier"
    "toothbrush": (),
}


def _none(thing: str) -> str:
    return f"ImageNet-1k has no {thing} class"


COCO_REASONS = {
    "person": NO_PERSON,
    "fire hydrant": _none("fire hydrant"),
    "giraffe": _none("giraffe"),
    "suitcase": _none("suitcase or luggage"),
    "frisbee": _none("frisbee"),
    "snowboard": _none("snowboard"),
    "kite": "ImageNet-1k's kite (21) is the bird of prey, not the toy",
    "baseball bat": _none("bat") + " (baseball (429) is the ball)",
    "baseball glove": _none("baseball glove"),
    "skateboard": _none("skateboard"),
    "surfboard": _none("surfboard"),
    "fork": _none("fork"),
    "carrot": _none("carrot"),
    "donut": _none("doughnut") + " (bagel is another food)",
    "cake": _none("cake"),
    "scissors": _none("scissors"),
    "toothbrush": _none("toothbrush"),
}
