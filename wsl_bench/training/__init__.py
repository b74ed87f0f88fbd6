"""Lightning glue every trainable method uses: one module base class and one `train_module`.

    from wsl_bench.training import ClassifierModule, train_module, load_weights

    class MyModule(ClassifierModule):
        def compute_loss(self, batch, outputs):
            loss, logs = super().compute_loss(batch, outputs)   # BCE on the 14 findings
            extra = my_extra_loss(batch, outputs)
            return loss + extra, {**logs, "extra": extra}

    best = train_module(MyModule(net), cohort.train, cohort.val, ctx, max_epochs=5, batch_size=32)
    # the module now holds the best weights; `best` is the best Lightning checkpoint (weights_only-safe)

See docs/harness.md ("Training") for resume, determinism and DDP.
"""

from wsl_bench.training.module import ClassifierModule, mean_auroc
from wsl_bench.training.schedules import warmup_cosine, warmup_cosine_config
from wsl_bench.training.trainer import DEFAULT_PATIENCE, load_weights, train_module

__all__ = ["DEFAULT_PATIENCE", "ClassifierModule", "load_weights", "mean_auroc", "train_module", "warmup_cosine", "warmup_cosine_config"]
