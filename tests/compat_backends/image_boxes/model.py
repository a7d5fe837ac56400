"""A colour-blob detector, written for the label-studio-ml SDK.

Labeling config: one <RectangleLabels> on one <Image>, with labels named after colours
("Red", "Green", "Blue"). The image is read through self.get_local_path (Label Studio uploads
need LABEL_STUDIO_URL and a token); a label's box bounds the pixels bright in its colour and
dark in the other two.
"""

from typing import Any

from label_studio_ml.model import LabelStudioMLBase
from PIL import Image

CHANNELS = {"Red": 0, "Green": 1, "Blue": 2}


class ColorBoxes(LabelStudioMLBase):
    """One rectangle per colour label whose colour the image shows."""

    def setup(self) -> None:
        self.from_name, self.to_name, self.value = self.get_first_tag_occurence(
            "RectangleLabels", "Image"
        )
        labels = self.parsed_label_config[self.from_name]["labels"]
        self.colours = [label for label in labels if label in CHANNELS]

    def predict(self, tasks: list[dict], context: dict | None = None, **kwargs: Any) -> list[dict]:
        """Boxes in percent of the image size, as Label Studio's rectangles are.

        :param tasks: Label Studio tasks in JSON format
        """
        predictions = []
        for task in tasks:
            path = self.get_local_path(task["data"][self.value], task_id=task["id"])
            with Image.open(path) as picture:
                rgb = picture.convert("RGB")
            width, height = rgb.size
            results = []
            for colour in self.colours:
                channel = CHANNELS[colour]
                mask = Image.new("L", rgb.size)
                mask.putdata(
                    [
                        255 if pixel[channel] > 128 and sorted(pixel)[1] < 100 else 0
                        for pixel in rgb.getdata()
                    ]
                )
                box = mask.getbbox()
                if box is None:
                    continue
                left, top, right, bottom = box
                results.append(
                    {
                        "from_name": self.from_name,
                        "to_name": self.to_name,
                        "type": "rectanglelabels",
                        "original_width": width,
                        "original_height": height,
                        "image_rotation": 0,
                        "value": {
                            "x": 100.0 * left / width,
                            "y": 100.0 * top / height,
                            "width": 100.0 * (right - left) / width,
                            "height": 100.0 * (bottom - top) / height,
                            "rotation": 0,
                            "rectanglelabels": [colour],
                        },
                        "score": 0.8,
                    }
                )
            predictions.append({"result": results, "score": 0.8 if results else 0.0})
        return predictions
