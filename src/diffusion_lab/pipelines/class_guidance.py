"""Class labels and classifier-free guidance (Ho & Salimans 2022) shared by our class-conditional pipelines.

A class-conditional model embeds `num_class_embeds = K + 1` labels: the K classes, then the null class (index K),
which training substitutes for a label with probability --label_dropout. Guided prediction:
out = out_u + w (out_c - out_u), with out_c the prediction for the label and out_u the one for the null class;
w = 1 is the plain conditional model and w = 0 the unconditional one, computed as a single pass each, so that
they equal those models exactly.

This file imports only torch: it travels with saved pipelines as remote code.
"""

import torch


def num_classes_of(model) -> int | None:
    """K, the number of real classes of a class-conditional model (None for an unconditional one)."""
    num_class_embeds = getattr(model.config, "num_class_embeds", None)
    return None if not num_class_embeds else num_class_embeds - 1


def resolve_class_labels(class_labels, batch_size, class_names, num_classes, device) -> torch.Tensor:
    """Class indices (int64, shape (N,)) for `class_labels`: None (unconditional: the null class), an int or a class
    name (one label for the batch), or a list/tensor of them (one per image)."""
    if num_classes is None:
        if class_labels is not None:
            raise ValueError("class_labels were given but the model is not class-conditional: drop class_labels.")
        return None
    if class_labels is None:
        return torch.full((batch_size or 1,), num_classes, dtype=torch.long, device=device)
    if torch.is_tensor(class_labels):
        class_labels = class_labels.reshape(-1).tolist()
    elif isinstance(class_labels, (int, str)):
        class_labels = [class_labels] * (batch_size or 1)
    class_labels = list(class_labels)
    if batch_size is not None and len(class_labels) != batch_size:
        raise ValueError(f"{len(class_labels)} class labels were given for batch_size {batch_size}: give one per image or a single one.")
    return torch.tensor([class_index(label, class_names, num_classes) for label in class_labels], dtype=torch.long, device=device)


def class_index(label, class_names, num_classes: int) -> int:
    """The index of one label, given as an int in 0..K-1 or as a class name."""
    names = list(class_names or [])
    if isinstance(label, str):
        if label in names:
            return names.index(label)
        if not label.lstrip("-").isdigit():
            known = ", ".join(names) if names else f"0..{num_classes - 1}"
            raise ValueError(f"class label {label!r} is not a class of this model (classes: {known}).")
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ValueError(f"class label {label!r} is outside 0..{num_classes - 1}: this model has {num_classes} classes.")
    return label


def guided_prediction(model, sample, timestep, class_labels, null_class: int, guidance_scale: float) -> torch.Tensor:
    """The model's output `.sample` with classifier-free guidance of scale `guidance_scale` on `class_labels`."""
    if class_labels is None:
        return model(sample, timestep).sample
    if guidance_scale == 1:
        return model(sample, timestep, class_labels=class_labels).sample
    unconditional_labels = torch.full_like(class_labels, null_class)
    if guidance_scale == 0:
        return model(sample, timestep, class_labels=unconditional_labels).sample
    if torch.is_tensor(timestep) and timestep.ndim > 0:
        timestep = torch.cat([timestep, timestep])
    both = model(torch.cat([sample, sample]), timestep, class_labels=torch.cat([class_labels, unconditional_labels])).sample
    conditional, unconditional = both.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)
