"""Step 5: train victims, whatever the model family.

A model config names one of the regimes below as its ``_target_`` and gives it the family's
parts; ``regime.fit(train, poison_sets, fit)`` trains one victim per poison set on
``train ∪ poison`` and returns `Victims` (``predict_proba``, ``representation(x, layer)``).

- `fixed_features.FixedFeatures`: heads on a frozen backbone's cached features, all victims
  batched in one module (the MLP on tabular data; VGG-LL and EfficientNet-LL).
- `end_to_end.EndToEnd`: the whole network per victim (Conv, VGG-FT, EfficientNet-FT).

Nothing here names a concrete model; models never import this package.
"""
