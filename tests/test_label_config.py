"""Labeling configs: safe parsing, the parsed model, and the helpers model authors use."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from labelbridge.errors import InvalidLabelConfig
from labelbridge.label_config import ControlTag, LabelConfig, MissingTag

# CI puts a copy of shared/ beside the clone: <clone>/../shared/
CAPTURES = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "protocol"
    / "label-studio-1.23.2-captures.json"
)

TEXT_CLASSIFICATION = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single-radio">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral" alias="neu"/>
  </Choices>
</View>
"""
NER = """
<View>
  <Labels name="label" toName="text">
    <Label value="Personne" background="red"/>
    <Label value="Organisation" alias="ORG"/>
    <Label value="東京の場所"/>
  </Labels>
  <Text name="text" value="$text" valueType="text"/>
</View>
"""
BBOX = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="Cat"/><Label value="Dog"/>
  </RectangleLabels>
</View>
"""
POLYGONS_AND_KEYPOINTS = """
<View>
  <Image name="img" value="$url"/>
  <PolygonLabels name="poly" toName="img"><Label value="Road"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="img"><Label value="Eye"/><Label value="Nose"/></KeyPointLabels>
</View>
"""
TEXTAREA_RATING = """
<View>
  <Audio name="audio" value="$audio"/>
  <TextArea name="transcript" toName="audio" rows="4"/>
  <Rating name="quality" toName="audio" maxRating="10"/>
</View>
"""
TAXONOMY = """
<View>
  <Text name="text" value="$text"/>
  <Taxonomy name="topic" toName="text">
    <Choice value="Science">
      <Choice value="Physics"/>
      <Choice value="Biology"><Choice value="Genetics"/></Choice>
    </Choice>
    <Choice value="Sports" alias="SP"/>
  </Taxonomy>
</View>
"""
NESTED_VIEWS = """
<View>
  <View style="display: flex">
    <View><Text name="body" value="$body"/></View>
    <View>
      <Choices name="topic" toName="body" choice="multiple">
        <View style="columns: 2"><Choice value="Sport"/><View><Choice value="Music"/></View></View>
        <Header value="More"/>
        <Choice value="Food"/>
      </Choices>
    </View>
  </View>
</View>
"""
MULTI = """
<View>
  <Image name="left" value="$left"/>
  <Image name="right" value="$right"/>
  <Text name="caption" value="$caption"/>
  <Choices name="quality" toName="left,right"><Choice value="Good"/><Choice value="Bad"/></Choices>
  <Labels name="ner" toName="caption"><Label value="PER"/></Labels>
  <Choices name="lang" toName="caption"><Choice value="en"/><Choice value="fr"/></Choices>
  <RectangleLabels name="boxes" toName="right"><Label value="Car"/></RectangleLabels>
</View>
"""
DYNAMIC = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="options" toName="text" value="$options" choice="multiple"/>
</View>
"""


def test_text_classification_is_parsed_into_typed_tags() -> None:
    config = LabelConfig.parse(TEXT_CLASSIFICATION)
    assert list(config.controls) == ["sentiment"]
    control = config.controls["sentiment"]
    assert isinstance(control, ControlTag)
    assert (control.name, control.tag, control.type) == ("sentiment", "Choices", "choices")
    assert control.to_name == ("text",)
    assert control.labels == ("Positive", "Negative", "Neutral")
    assert control.label_attrs["Neutral"] == {"value": "Neutral", "alias": "neu"}
    assert control.choice == "single" and not control.dynamic_labels
    assert {"Positive", "Negative", "Neutral", "neu"} == control.label_set
    text = config.objects["text"]
    assert (text.name, text.tag, text.value, text.value_field) == ("text", "Text", "$text", "text")


def test_first_returns_control_object_field_and_labels() -> None:
    config = LabelConfig.parse(TEXT_CLASSIFICATION)
    pick = config.first("Choices")
    assert pick.control is config.controls["sentiment"]
    assert pick.object is config.objects["text"]
    assert pick.value_field == "text"
    assert pick.labels == ("Positive", "Negative", "Neutral")
    control, obj, field, labels = config.first(("Labels", "Choices"), object_tag="Text")
    assert (control.name, obj.name, field, labels[0]) == ("sentiment", "text", "text", "Positive")


def test_first_names_what_is_missing() -> None:
    config = LabelConfig.parse(TEXT_CLASSIFICATION)
    with pytest.raises(InvalidLabelConfig) as info:
        config.first("RectangleLabels", object_tag="Image")
    assert info.value.field == "label_config"
    assert "RectangleLabels" in info.value.detail and "Image" in info.value.detail
    assert "Choices 'sentiment'" in info.value.detail  # what it has instead
    with pytest.raises(MissingTag):
        config.first("Choices", object_tag="Image")


def test_ner_labels_keep_unicode_values_and_aliases() -> None:
    config = LabelConfig.parse(NER)
    control = config.first("Labels", object_tag="Text").control
    assert control.type == "labels"
    assert control.labels == ("Personne", "Organisation", "東京の場所")
    assert control.label_attrs["Personne"]["background"] == "red"
    assert "ORG" in control.label_set and "東京の場所" in control.label_set
    parsed = config.to_parsed_dict()["label"]
    assert parsed["labels"] == ["Personne", "ORG", "東京の場所"]  # Label Studio keys by alias
    assert parsed["inputs"] == [{"type": "Text", "valueType": "text", "value": "text"}]


def test_image_boxes_polygons_and_keypoints() -> None:
    box = LabelConfig.parse(BBOX).first("RectangleLabels", object_tag="Image")
    assert (box.control.type, box.object.name, box.value_field) == (
        "rectanglelabels",
        "image",
        "image",
    )
    config = LabelConfig.parse(POLYGONS_AND_KEYPOINTS)
    assert config.controls["poly"].type == "polygonlabels"
    assert config.controls["kp"].labels == ("Eye", "Nose")
    assert [c.name for c in config.controls_of(("polygonlabels", "KeyPointLabels"))] == [
        "poly",
        "kp",
    ]
    assert config.get_first_tag_occurence("KeyPointLabels", "Image") == ("kp", "img", "url")


def test_textarea_and_rating_keep_their_attributes() -> None:
    config = LabelConfig.parse(TEXTAREA_RATING)
    assert config.controls["transcript"].type == "textarea"
    assert config.controls["transcript"].labels == ()
    assert config.controls["quality"].attrs["maxRating"] == "10"
    assert config.first("Rating").object.tag == "Audio"


def test_taxonomy_stores_label_paths() -> None:
    control = LabelConfig.parse(TAXONOMY).controls["topic"]
    assert control.labels == ("Science", "Physics", "Biology", "Genetics", "Sports")
    assert control.label_paths == (
        ("Science",),
        ("Science", "Physics"),
        ("Science", "Biology"),
        ("Science", "Biology", "Genetics"),
        ("Sports",),
    )
    assert ("SP",) in control.path_set  # the alias is what results carry
    assert ("Science", "Biology") not in control.leaf_paths
    assert ("Science", "Biology", "Genetics") in control.leaf_paths


def test_nested_views_inside_choices_are_walked() -> None:
    config = LabelConfig.parse(NESTED_VIEWS)
    control = config.controls["topic"]
    assert control.labels == ("Sport", "Music", "Food")
    assert control.choice == "multiple"
    assert "More" not in control.labels  # a <Header> is not a choice
    assert config.first("Choices").value_field == "body"


def test_multiple_controls_and_comma_separated_to_name() -> None:
    config = LabelConfig.parse(MULTI)
    assert list(config.controls) == ["quality", "ner", "lang", "boxes"]
    assert config.controls["quality"].to_name == ("left", "right")
    assert [c.name for c in config.controls_of("Choices")] == ["quality", "lang"]
    assert config.first("Choices", object_tag="Text").control.name == "lang"
    pick = config.first("Choices")
    assert (pick.control.name, pick.object.name) == ("quality", "left")
    assert config.get_first_tag_occurence("Choices", "Text") == ("lang", "caption", "caption")
    assert config.get_first_tag_occurence(("Labels", "Choices"), ("Text",)) == (
        "ner",
        "caption",
        "caption",
    )
    assert config.get_first_tag_occurence(
        "Choices", "Image", to_name_filter=lambda name: name == "right"
    ) == ("quality", "right", "right")
    assert config.to_parsed_dict()["quality"]["inputs"] == [
        {"type": "Image", "valueType": None, "value": "left"},
        {"type": "Image", "valueType": None, "value": "right"},
    ]


def test_get_first_tag_occurence_raises_a_value_error_like_the_sdk() -> None:
    config = LabelConfig.parse(MULTI)
    with pytest.raises(ValueError, match="Taxonomy"):
        config.get_first_tag_occurence("Taxonomy", "Text")
    with pytest.raises(ValueError):
        config.get_first_tag_occurence("Choices", "Text", name_filter=lambda n: n == "quality")


def test_dynamic_choices_take_options_from_the_task() -> None:
    config = LabelConfig.parse(DYNAMIC)
    control = config.controls["options"]
    assert control.dynamic_labels and control.labels == ()
    assert "options" not in config.objects  # a control, even though it has a $value
    assert config.to_parsed_dict()["options"]["dynamic_labels"] is True
    assert "dynamic_labels" not in LabelConfig.parse(BBOX).to_parsed_dict()["box"]


def test_parsed_dict_has_label_studios_shape() -> None:
    config = LabelConfig.parse(TEXT_CLASSIFICATION)
    assert config.to_parsed_dict() == {
        "sentiment": {
            "type": "Choices",
            "to_name": ["text"],
            "inputs": [{"type": "Text", "valueType": None, "value": "text"}],
            "labels": ["Positive", "Negative", "neu"],
            "labels_attrs": {
                "Positive": {"value": "Positive"},
                "Negative": {"value": "Negative"},
                "neu": {"value": "Neutral", "alias": "neu"},
            },
        }
    }
    per_region = LabelConfig.parse(
        '<View><Image name="i" value="$i"/><Choices name="c" toName="i" perRegion="true" '
        'whenTagName="b"><Choice value="x"/></Choices><Rectangle name="b" toName="i"/></View>'
    )
    assert per_region.to_parsed_dict()["c"]["conditionals"] == {"type": "tag", "name": "b"}


@pytest.mark.skipif(not CAPTURES.is_file(), reason=f"captures not found at {CAPTURES}")
def test_captured_config_parses_as_label_studio_does() -> None:
    steps = {s["step"]: s for s in json.loads(CAPTURES.read_text(encoding="utf-8"))["steps"]}
    step = steps["create_project"]
    xml = step["label_studio_call"]["body"]["label_config"]
    config = LabelConfig.parse(xml)
    assert config.to_parsed_dict() == step["label_studio_answer"]["body"]["parsed_label_config"]
    assert config.first("Choices").control.choice == "single"


def test_hash_is_the_sha256_of_the_text_and_parses_are_cached() -> None:
    first = LabelConfig.parse(BBOX)
    assert first.hash == hashlib.sha256(BBOX.encode("utf-8")).hexdigest()
    assert LabelConfig.parse(BBOX) is first
    assert LabelConfig.parse(BBOX + " ").hash != first.hash


def test_parsed_configs_are_shared_so_they_cannot_be_changed() -> None:
    config = LabelConfig.parse(TEXT_CLASSIFICATION)
    with pytest.raises(TypeError):
        config.controls["x"] = config.controls["sentiment"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.controls["sentiment"].attrs["toName"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.controls["sentiment"].labels.append("Other")  # type: ignore[attr-defined]


# --- hostile and broken input -------------------------------------------------------------
def refused(xml: object, **limits: int) -> InvalidLabelConfig:
    with pytest.raises(InvalidLabelConfig) as info:
        LabelConfig.parse(xml, **limits)  # type: ignore[arg-type]
    error = info.value
    assert type(error) is InvalidLabelConfig and error.status_code == 422
    assert error.field == "label_config" and error.fix
    return error


def test_billion_laughs_is_refused_quickly() -> None:
    entities = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    bomb = f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{entities}]>'
    bomb += '<View><Text name="t" value="$t"/><Choices name="c" toName="t">&lol9;</Choices></View>'
    began = time.perf_counter()
    error = refused(bomb)
    assert time.perf_counter() - began < 0.5
    assert "DTD" in error.detail


def test_external_entities_and_dtds_are_refused() -> None:
    xxe = (
        '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<View><Text name="t" value="&x;"/><Choices name="c" toName="t"/></View>'
    )
    error = refused(xxe)
    assert "DTD" in error.detail and "root:" not in str(error)
    assert "DTD" in refused('<!DOCTYPE View><View><Labels name="l" toName="t"/></View>').detail


def test_size_limit_is_enforced_before_parsing() -> None:
    huge = "<View>" + '<Choice value="x"/>' * 110_000 + "</View>"  # about 2 MB
    assert len(huge) > 2_000_000
    error = refused(huge)
    assert "1048576 bytes" in error.detail
    assert "bytes" in refused(TEXT_CLASSIFICATION, max_bytes=100).detail
    assert LabelConfig.parse(TEXT_CLASSIFICATION, max_bytes=len(TEXT_CLASSIFICATION))


def test_deep_nesting_is_refused() -> None:
    control = '<Text name="t" value="$t"/><Choices name="c" toName="t"/>'
    deep = "<View>" * 1000 + control + "</View>" * 1000
    assert "more than 100 levels" in refused(deep).detail
    assert "levels" in refused("<View>" * 5 + control + "</View>" * 5, max_depth=4).detail
    assert LabelConfig.parse("<View>" * 5 + control + "</View>" * 5, max_depth=6)


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("just some text", "not well-formed"),
        ('{"label_config": "<View/>"}', "not well-formed"),
        ("<View><Choices name='c' toName='t'>", "not well-formed"),
        ("<View>&nbsp;</View>", "not well-formed"),
        ("<View><Text name='t' value='$t'/></View>", "no control tag"),
        ("<View/>", "no control tag"),
        ("<View><Text name='t' value='$t'/><Choices name='t' toName='t'/></View>", "'t'"),
    ],
)
def test_broken_configs_are_refused_with_a_clear_message(xml: str, words: str) -> None:
    assert words in refused(xml).detail


def test_non_string_input_is_refused() -> None:
    assert "string" in refused(b"<View/>").detail
