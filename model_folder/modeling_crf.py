# coding=utf-8
"""SpanBERT + CRF for extractive question answering.

The model tags every token of a (question, context) window with one of three BIO tags
(``O`` = 0, ``B`` = 1, ``I`` = 2) and scores whole tag sequences with a linear-chain CRF
(pytorch-crf). An answer is the single ``B I*`` run of an admissible tag path: evaluation keeps each window's
``n_best_size`` most probable ones. A multi-span model (``multi_span=True``, trained on answers made of several
spans) answers with every ``B I*`` run of its most probable valid paths instead.

This file and ``crf_decoding.py`` (the CRF algorithms and decoders) are deliberately self-contained (they import only
``torch``, ``torchcrf``, ``transformers``, the standard library and each other): ``save_pretrained`` copies both next
to the weights (``crf_decoding`` as a relative import of this file), and ``trust_remote_code=True`` imports them from
there in processes that know nothing about the project they came from. They therefore hold only what a loaded model
runs; the reference computations that tests and benches check and time it against (the log-likelihood by the forward
recursion alone, tag marginals, the best path only, ...) are in ``tests/crf_reference.py``, not saved with models.

Conventions used throughout:

* ``emissions`` are ``(batch, seq, 3)`` per-token tag scores, ``mask`` is a ``(batch, seq)`` bool tensor.
* The mask must be a *length prefix* (right padding): pytorch-crf, and the recursions of crf_decoding.py, read it as
  "the first ``L`` positions are real". Position 0 must always be on. Other masks (left padding) are refused with a
  ValueError.
* All CRF arithmetic runs in float32 with autocast disabled, whatever dtype the encoder runs in (the span decoding's
  search and its path scores in float64).
"""

import copy
import dataclasses
from dataclasses import dataclass

import torch
import transformers
from torch import nn

# What a process without them would otherwise say (transformers asks for "torchcrf", another project on PyPI, and
# transformers 4 fails on the first name it lacks): the model's requirements, which the folder's requirements.txt lists.
if int(transformers.__version__.split(".")[0]) < 5:
    raise ImportError(f"The CRF question-answering model needs transformers 5 (its config and loading are transformers "
                      f"5's; 5.24 or later tested), and this process has transformers {transformers.__version__}: "
                      "pip install -r requirements.txt (in the model folder)")
try:
    from torchcrf import CRF
except ImportError as err:
    raise ImportError("The CRF question-answering model needs pytorch-crf (its module is torchcrf): pip install "
                      "pytorch-crf==0.7.2, or pip install -r requirements.txt in the model folder") from err

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from .crf_decoding import (
    BIO_TAGS,
    crf_boundary_logits,
    crf_decode_multi_spans,
    crf_decode_nbest_spans,
    crf_forward_backward,
    crf_path_scores,
)

# Hub/download arguments of `from_pretrained` that are needed to read a config file.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


class Float32CRF(CRF):
    """pytorch-crf's CRF whose parameters stay float32 when the model is cast (`model.to(torch.bfloat16)`, as the
    Trainer casts it for `--bf16_full_eval`): rounding its 15 scores would move every path's score. They still follow
    the model's device."""

    def _apply(self, fn, recurse=True):
        def device_only(tensor):
            moved = fn(tensor)
            return moved if moved.dtype == tensor.dtype else tensor.to(moved.device)

        return super()._apply(device_only, recurse)


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


class CrfQAConfig(PreTrainedConfig):
    r"""
    Configuration of [`CrfForQuestionAnswering`]: a BERT-family encoder (stored whole as the `encoder` sub-config),
    a dropout, a linear layer producing `num_tags` emission scores per token and a linear-chain CRF over BIO tags.

    Args:
        encoder (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the backbone. A dict must carry the backbone's `model_type` (e.g. `"bert"`); it is
            turned into the matching config class. Defaults to a default `BertConfig`.
        num_tags (`int`, *optional*, defaults to 3):
            Number of CRF tags. The question-answering decoding assumes the BIO scheme `O=0, B=1, I=2`, so it
            must be 3.
        classifier_dropout (`float`, *optional*):
            Dropout applied to the encoder output before the emission layer. Defaults to the encoder's
            `hidden_dropout_prob`, or 0.1 when the encoder has none.
        emission_relu (`bool`, *optional*, defaults to `False`):
            Apply a ReLU to the emission scores (as the original notebook did).
        n_best_size (`int`, *optional*, defaults to 20):
            Spans per window the eval-mode forward returns: the `n_best_size` most probable single-span paths
            (evaluation sets it to its `--n_best_size`).
        max_answer_length (`int`, *optional*):
            The most tokens a decoded span may cover; `None` (the default) for no limit. Single-span decoding only.
        multi_span (`bool`, *optional*, defaults to `False`):
            Decode answers made of any number of spans: the eval-mode forward returns the `n_best_size` most probable
            valid BIO paths with at least one span (`crf_decoding.crf_decode_multi_spans`) instead of single-span
            paths. `run_qa_crf.py` sets it when it trains on multi-span data.

    Example:

    ```python
    >>> from transformers import BertConfig
    >>> config = CrfQAConfig(encoder=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2))
    >>> model = CrfForQuestionAnswering(config)
    ```
    """

    model_type = "crf_qa"
    # The Trainer gathers every other output: evaluation decodes with the constrained n-best spans, and the marginal
    # start/end logits (for span-model code) would only cost memory there.
    keys_to_ignore_at_inference = ["start_logits", "end_logits"]
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: dict | PreTrainedConfig | None = None
    num_tags: int = 3
    classifier_dropout: float | None = None
    emission_relu: bool = False
    n_best_size: int = 20
    max_answer_length: int | None = None
    multi_span: bool = False

    def __post_init__(self, **kwargs):
        # Name the tags unless the caller did: `id2label` documents the meaning of the emission columns.
        if self.id2label is None and "num_labels" not in kwargs:
            self.id2label = {i: BIO_TAGS[i] if self.num_tags == 3 else f"TAG_{i}" for i in range(self.num_tags)}
            self.label2id = {name: i for i, name in self.id2label.items()}
        super().__post_init__(**kwargs)
        if self.classifier_dropout is None:
            dropout = getattr(self.encoder, "hidden_dropout_prob", None)
            self.classifier_dropout = 0.1 if dropout is None else dropout

    # Read-only views of the backbone's sizes, for code that expects them on the top-level config.
    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder.num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.encoder.num_attention_heads


def _crf_config_fields() -> set[str]:
    """Names of the fields `CrfQAConfig` adds on top of `PreTrainedConfig` (used to route `from_pretrained` kwargs)."""
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return {f.name for f in dataclasses.fields(CrfQAConfig)} - base - {"encoder"}


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class CrfQuestionAnsweringOutput(ModelOutput):
    r"""
    Output of [`CrfForQuestionAnswering`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Negative CRF log-likelihood of the gold BIO tags, averaged over the batch.
        start_logits (`torch.FloatTensor` of shape `(batch, seq)`):
            `log P(y_i = B)` from the CRF marginals. Position 0 holds `log P(all tags O)` (the null answer),
            padding holds a large negative finite number.
        end_logits (`torch.FloatTensor` of shape `(batch, seq)`):
            `log P(a span ends at i)`, i.e. `y_i` is `B` or `I` and `y_{i+1}` is `O` or `B` (or `i` is the last
            real token). Position 0 and padding as for `start_logits`.
        span_start (`torch.LongTensor` of shape `(batch, n_best_size)`, *optional*, eval mode only):
            First tokens of the answer spans of the `n_best_size` most probable paths with exactly one span inside
            `context_mask` (and at most `max_answer_length` tokens), best first. Multi-span: `(batch, spans)`, the
            spans of the `n_best_size` most probable paths with any number of spans, by path then position.
        span_end (`torch.LongTensor` of shape `(batch, n_best_size)`, *optional*, eval mode only):
            Last tokens (inclusive) of those spans.
        span_score (`torch.FloatTensor` of shape `(batch, n_best_size)`, *optional*, eval mode only):
            `log P(path)` of each; `-inf` (with `span_start = span_end = 0`) past the window's last allowed span.
            Multi-span: `(batch, spans)`, each span's marginal `log P(the span is a whole span)`.
        span_path (`torch.LongTensor` of shape `(batch, spans)`, *optional*, eval mode, multi-span only):
            The path each span belongs to (0 = the most probable); -1 pads.
        path_score (`torch.FloatTensor` of shape `(batch, n_best_size)`, *optional*, eval mode, multi-span only):
            `log P(path)` of the paths, best first; `-inf` past the last.
        null_score (`torch.FloatTensor` of shape `(batch,)`, *optional*, eval mode only):
            `log P(all tags O)`.
        hidden_states, attentions:
            The encoder's, when requested with `output_hidden_states` / `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    start_logits: torch.FloatTensor | None = None
    end_logits: torch.FloatTensor | None = None
    span_start: torch.LongTensor | None = None
    span_end: torch.LongTensor | None = None
    span_score: torch.FloatTensor | None = None
    span_path: torch.LongTensor | None = None
    path_score: torch.FloatTensor | None = None
    null_score: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def _encoder_from(factory, *args, **kwargs):
    """
    Call an `AutoModel` factory without the pooling layer when the backbone supports dropping it.

    BERT-like models take `add_pooling_layer`; others (DistilBERT, ...) reject it, and only the model class can
    tell, so try and fall back.
    """
    try:
        return factory(*args, add_pooling_layer=False, **kwargs)
    except TypeError as error:
        if "add_pooling_layer" not in str(error):
            raise
        return factory(*args, **kwargs)


class CrfPreTrainedModel(PreTrainedModel):
    config_class = CrfQAConfig
    config: CrfQAConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    # Attention is entirely the encoder's business; it checks its own support when it is built.
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The CRF parameters are tiny and their log-sum-exps are precision sensitive: keep them in float32 when the
    # model is loaded in half precision.
    _keep_in_fp32_modules_strict = ["crf"]
    # The loss is a per-sequence mean and ignores `num_items_in_batch`: let the Trainer scale it for accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        """Initialise the head. The encoder is a `PreTrainedModel` and is dispatched to its own `_init_weights`."""
        # The `init` helpers skip tensors flagged as loaded from a checkpoint, so this never overwrites weights.
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder, "initializer_range", 0.02))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, CRF):
            # pytorch-crf's own `reset_parameters` distribution. It must be repeated here: `from_pretrained`
            # builds the model on the meta device, where the constructor's initialisation never happened.
            init.uniform_(module.start_transitions, -0.1, 0.1)
            init.uniform_(module.end_transitions, -0.1, 0.1)
            init.uniform_(module.transitions, -0.1, 0.1)


class CrfForQuestionAnswering(CrfPreTrainedModel):
    """
    Encoder -> dropout -> linear (3 BIO emission scores per token) -> [ReLU] -> linear-chain CRF.

    Training minimises the CRF negative log-likelihood of gold BIO tags. Every forward returns span-boundary
    log-marginals shaped like a span model's `start_logits` / `end_logits`; in eval mode it also decodes, per
    sequence, the `n_best_size` most probable paths with exactly one answer span inside the context.
    """

    def __init__(self, config: CrfQAConfig, encoder: PreTrainedModel | None = None):
        """
        Args:
            config: the model configuration.
            encoder: an already built (typically pretrained) backbone to use instead of a freshly initialised one.
        """
        super().__init__(config)
        if config.num_tags != 3:
            raise ValueError(f"CrfForQuestionAnswering uses BIO tags and needs num_tags=3, got {config.num_tags}.")
        self.encoder = encoder if encoder is not None else _encoder_from(AutoModel.from_config, config.encoder)
        # One config object for the backbone, so that what is saved is what the encoder runs with.
        self.config.encoder = self.encoder.config
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.emissions = nn.Linear(self.encoder.config.hidden_size, config.num_tags)
        self.crf = Float32CRF(config.num_tags, batch_first=True)
        self.post_init()

    # ---- loading -----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """
        Load a saved `CrfForQuestionAnswering`, or start one from a plain encoder checkpoint.

        * A folder/repo whose config has `model_type="crf_qa"` is restored exactly (standard loading).
        * Any other checkpoint (a `BertModel`, or a `BertForPreTraining`/`BertForQuestionAnswering` whose keys carry
          a `bert.` prefix, ...) is loaded as the encoder with `AutoModel.from_pretrained`, which resolves the key
          prefixes; the emission layer and the CRF start freshly initialised.

        Keyword arguments naming `CrfQAConfig` fields (`classifier_dropout`, `emission_relu`, `num_tags`) update the
        CRF config; all others (`cache_dir`, `revision`, `token`, `dtype`, `device_map`, `attn_implementation`,
        encoder config overrides, ...) are passed on to the loader.
        """
        crf_kwargs = {key: kwargs.pop(key) for key in _crf_config_fields() if key in kwargs}
        if isinstance(config, PreTrainedConfig):
            is_crf = config.model_type == CrfQAConfig.model_type
        else:
            hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
            probe = config if config is not None else pretrained_model_name_or_path
            config_dict, _ = PreTrainedConfig.get_config_dict(probe, **hub_kwargs)
            is_crf = config_dict.get("model_type") == CrfQAConfig.model_type

        if not is_crf:
            return cls._from_encoder_checkpoint(
                pretrained_model_name_or_path, *model_args, config=config, crf_kwargs=crf_kwargs, **kwargs
            )
        if isinstance(config, PreTrainedConfig) and crf_kwargs:
            # With an explicit config, `from_pretrained` would hand these kwargs to `__init__`: apply them here.
            config = copy.deepcopy(config)
            for key, value in crf_kwargs.items():
                setattr(config, key, value)
        else:
            kwargs.update(crf_kwargs)  # the config loader applies them
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def _from_encoder_checkpoint(cls, pretrained_model_name_or_path, *model_args, config, crf_kwargs, **kwargs):
        """Build the model around a pretrained plain encoder; see `from_pretrained`."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        encoder = _encoder_from(
            AutoModel.from_pretrained,
            pretrained_model_name_or_path,
            *model_args,
            config=config,
            output_loading_info=output_loading_info,
            **kwargs,
        )
        if output_loading_info:
            encoder, loading_info = encoder

        # A copy: building a composite config resets the attention implementation of the sub-config it is given
        # (transformers 5 dispatches `attn_implementation=None` recursively), and the live encoder must keep its
        # own. `__init__` then points the new config back at `encoder.config`.
        config = CrfQAConfig(encoder=copy.deepcopy(encoder.config), **crf_kwargs)
        # The loaded encoder's parameters carry the "already initialised" flags, so `post_init` only
        # initialises the head and the CRF.
        model = cls(config, encoder=encoder)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        # The new head follows the encoder's device and dtype, except the CRF which stays float32.
        model.emissions.to(device=encoder.device, dtype=encoder.dtype)
        model.crf.to(device=encoder.device)
        model.eval()  # like `from_pretrained`

        if output_loading_info:
            def prefixed_key(key):  # a name, or a mismatched tensor's (name, its shape, the model's)
                if isinstance(key, tuple):
                    return (prefixed_key(key[0]), *key[1:])
                return f"{cls.base_model_prefix}.{key}" if isinstance(key, str) else key

            prefixed = {name: {prefixed_key(key) for key in keys} for name, keys in loading_info.items()
                        if name != "error_msgs"}
            head = {name for name, _ in model.named_parameters() if not name.startswith(cls.base_model_prefix + ".")}
            prefixed["missing_keys"] = set(prefixed.get("missing_keys", ())) | head
            prefixed["error_msgs"] = loading_info.get("error_msgs", [])
            return model, prefixed
        return model

    # ---- training ------------------------------------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by role, for learning rates of their own: "encoder" (the pretrained backbone), "head" (the
        emission layer, which starts from random values) and "crf" (the 15 transition scores, which Adam moves by
        about the learning rate a step)."""
        return {"encoder": list(self.encoder.parameters()), "head": list(self.emissions.parameters()),
                "crf": list(self.crf.parameters())}

    # ---- heads ---------------------------------------------------------------------------------------------------

    def _crf_parameters(self):
        """The CRF's (start, end, transitions) as float32, whatever the module's storage dtype."""
        return (
            self.crf.start_transitions.float(),
            self.crf.end_transitions.float(),
            self.crf.transitions.float(),
        )

    def compute_emissions(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """`(batch, seq, hidden)` encoder states -> `(batch, seq, num_tags)` float32 emission scores."""
        emissions = self.emissions(self.dropout(sequence_output))
        if self.config.emission_relu:
            emissions = torch.relu(emissions)
        return emissions.float()

    def _encode(self, input_ids, attention_mask, token_type_ids, **kwargs):
        # Only pass segment ids when given: some backbones (DistilBERT, ...) take none.
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        encoded = self.encoder(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self.compute_emissions(encoded.last_hidden_state), encoded

    @staticmethod
    def _as_mask(attention_mask: torch.Tensor | None, emissions: torch.Tensor) -> torch.Tensor:
        """The CRF's `(batch, seq)` bool mask: the attention mask, checked to be a length prefix (a left-padded or
        holed mask would silently shift every tag score), or all True."""
        if attention_mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        mask = attention_mask.bool()
        rows = torch.nonzero(~mask[:, 0] | (mask[:, 1:] & ~mask[:, :-1]).any(dim=1)).flatten().tolist()
        if rows:
            raise ValueError(
                f"The CRF needs attention masks that are on from the first token up to the last real one and off "
                f"after it (padding on the right); rows {rows[:5]} of the batch are not: pad on the right "
                f"(tokenizer(..., padding_side='right'))"
            )
        return mask

    def decode_nbest_spans(
        self, emissions: torch.Tensor, attention_mask=None, context_mask=None, n_best_size=None, max_answer_length=None
    ):
        """
        Constrained n-best decoding: the `n_best_size` most probable tag paths under valid BIO with exactly one
        `B I*` span that lies entirely inside `context_mask`, exactly (see `crf_decoding.crf_kbest_single_spans`).

        Args:
            emissions: `(batch, seq, 3)`.
            attention_mask: `(batch, seq)` length-prefix mask, or `None`.
            context_mask: `(batch, seq)` bool, True where the answer may be; `None` means every attended token
                but position 0.
            n_best_size: paths per sequence (default `config.n_best_size`).
            max_answer_length: the most tokens a span may cover (default `config.max_answer_length`; `None`: no
                limit).

        Returns:
            `(span_start, span_end, span_score, null_score)`: `(batch, n_best_size)` inclusive token indices (long)
            and `log P(path)` (float32), best first, `-inf` (with `span_start = span_end = 0`) past the last allowed
            span; and `(batch,)` `log P(all O)`.
        """
        emissions = emissions.float()
        mask = self._as_mask(attention_mask, emissions)
        with torch.autocast(emissions.device.type, enabled=False):
            return self._decode_spans(emissions, mask, context_mask, n_best_size, max_answer_length)

    @staticmethod
    def _span_tokens(mask, context_mask):
        """The tokens a span may cover: `context_mask` within the mask, or every real token but the first."""
        if context_mask is None:
            context_mask = mask.clone()
            context_mask[:, 0] = False
            return context_mask
        return context_mask.bool() & mask

    def _decode_multi_spans(self, emissions, mask, context_mask, n_best_size, forward_backward):
        """`crf_decoding.crf_decode_multi_spans` of float32 emissions and a bool mask, `n_best_size` paths (default
        `config.n_best_size`)."""
        n_best_size = self.config.n_best_size if n_best_size is None else n_best_size
        return crf_decode_multi_spans(emissions, mask, self._span_tokens(mask, context_mask), *self._crf_parameters(),
                                      n_best_size, forward_backward)

    def _decode_spans(self, emissions, mask, context_mask, n_best_size=None, max_answer_length=None, log_z=None):
        """`decode_nbest_spans` on float32 emissions and a bool mask, reusing `log_z` `(batch,)` when already known."""
        context_mask = self._span_tokens(mask, context_mask)
        n_best_size = self.config.n_best_size if n_best_size is None else n_best_size
        if max_answer_length is None:
            max_answer_length = self.config.max_answer_length
        # The spans are chosen on float64 terms (the closed form's running sums reach ~1e4 on a confident window,
        # where float32 keeps ~1e-3) and each kept path and the all-O path are rescored in float64, where the null
        # odds (null_score - span_score) are exact (log Z is common to both).
        return crf_decode_nbest_spans(
            emissions, mask, context_mask, *self._crf_parameters(), n_best_size, max_answer_length, log_z=log_z
        )

    # ---- forward -------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        n_best_size: int | None = None,
        max_answer_length: int | None = None,
        **kwargs,
    ) -> CrfQuestionAnsweringOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq)`):
                Token ids of `[CLS] question [SEP] context [SEP] [PAD]...`.
            attention_mask (`torch.Tensor` of shape `(batch, seq)`, *optional*):
                1 on real tokens, 0 on padding. Must be a length prefix (right padding); also used as the CRF mask.
            token_type_ids (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
                Segment ids, passed to the encoder when given.
            labels (`torch.LongTensor` of shape `(batch, seq)`, *optional*):
                Gold BIO tags (O=0, B=1, I=2) at every position -- never -100: question, special and padding
                tokens are O.
            context_mask (`torch.BoolTensor` of shape `(batch, seq)`, *optional*):
                True on the tokens the answer may cover (the window's context tokens). Used by the eval-mode
                decoding only; defaults to every attended token but position 0.
            return_dict (`bool`, *optional*):
                Return a `CrfQuestionAnsweringOutput` (default: `config.return_dict`) or a tuple.
            n_best_size (`int`, *optional*):
                Spans per window the eval-mode decoding returns (default `config.n_best_size`).
            max_answer_length (`int`, *optional*):
                The most tokens a decoded span may cover (default `config.max_answer_length`, no limit when `None`).
            kwargs:
                Passed to the encoder (`position_ids`, `inputs_embeds`, `output_hidden_states`, ...).

        Returns:
            [`CrfQuestionAnsweringOutput`]: `loss` when `labels` are given, `start_logits`/`end_logits`
            `(batch, seq)` always, and in eval mode `span_start`, `span_end`, `span_score` `(batch, n_best_size)`
            (the n-best single-span paths, best first) and `null_score` `(batch,)`; a multi-span model's
            eval mode returns the spans of its n-best paths (`span_start`, `span_end`, `span_path`, `span_score`),
            `path_score` `(batch, n_best_size)` and `null_score`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        kwargs.pop("num_items_in_batch", None)  # a Trainer loss kwarg, meaningless to the encoder
        emissions, encoded = self._encode(input_ids, attention_mask, token_type_ids, **kwargs)
        mask = self._as_mask(attention_mask, emissions)
        start, end, trans = self._crf_parameters()
        with torch.autocast(emissions.device.type, enabled=False):
            # One forward-backward serves the marginals, the likelihood's log Z and the multi-span decoding.
            forward_backward = crf_forward_backward(emissions, mask, start, end, trans)
            start_logits, end_logits, log_z = crf_boundary_logits(emissions, mask, start, end, trans, forward_backward)
            loss = None
            if labels is not None:
                gold = crf_path_scores(emissions, labels.long(), mask, start, end, trans)
                loss = -(gold - log_z).mean()

            decoded = {}
            if not self.training and self.config.multi_span:
                names = ("span_start", "span_end", "span_score", "span_path", "path_score", "null_score")
                decoded = dict(zip(names, self._decode_multi_spans(emissions, mask, context_mask, n_best_size,
                                                                   forward_backward)))
            elif not self.training:
                # The constrained decode serves inference only; training skips it.
                names = ("span_start", "span_end", "span_score", "null_score")
                decoded = dict(zip(names, self._decode_spans(emissions, mask, context_mask, n_best_size,
                                                             max_answer_length, log_z=log_z)))

        output = CrfQuestionAnsweringOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            **decoded,
            hidden_states=getattr(encoded, "hidden_states", None),
            attentions=getattr(encoded, "attentions", None),
        )
        return output if return_dict else output.to_tuple()


# --------------------------------------------------------------------------------------------------------------------
# Registration: Auto classes resolve "crf_qa", and `save_pretrained` ships this file with an `auto_map`.
# `exist_ok` because this module is imported twice in a process that also loads a saved copy with
# `trust_remote_code=True`.
# --------------------------------------------------------------------------------------------------------------------

AutoConfig.register(CrfQAConfig.model_type, CrfQAConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(CrfQAConfig, CrfForQuestionAnswering, exist_ok=True)
CrfQAConfig.register_for_auto_class("AutoConfig")
CrfForQuestionAnswering.register_for_auto_class("AutoModelForQuestionAnswering")

__all__ = ["CrfQAConfig", "CrfForQuestionAnswering", "CrfPreTrainedModel", "CrfQuestionAnsweringOutput"]
