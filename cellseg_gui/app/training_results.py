"""What the Training docks do with a job's results: plots and lists on the GUI thread,
the new model registered and predicted, advice, guard-rail verdicts, and the small
actions of the result docks (use a learning rate, apply advice, open an image).

A mixin of ``TrainingController`` (app/training.py), split out to keep each file small;
it uses the controller's widgets (``panel``, ``gallery``, ``noisy``...), its Workspace and
its signals (``status``, ``panelWanted``, ``showRequested``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cellseg_gui.app import training_jobs as J
from cellseg_gui.core.events import Finished, Predicted, SampleLosses
from cellseg_gui.core.model.bundle_meta import BundleError, read_bundle_meta
from cellseg_gui.core.model.model_registry import display_name
from cellseg_gui.widgets.gallery import GalleryItem

log = logging.getLogger(__name__)


def model_summary(meta: dict) -> str:
    """A bundle's validation figures in words (those the Models list shows)."""
    from cellseg_gui.core.model.scoring import figure, model_scores, recorded_mean_jaccard

    jaccard, ap50 = model_scores(meta)
    figures = []
    if jaccard is not None:
        figures.append(f"validation foreground Jaccard {figure(jaccard)} (pooled over pixels")
        mean = recorded_mean_jaccard(meta)
        figures[-1] += f"; {figure(mean)} mean over images)" if mean is not None else ")"
    if ap50 is not None:  # the definitions `cellseg info` and `evaluate` name
        figures.append(f"cell AP@0.5 {figure(ap50)} (mean over images, with its post-processing)")
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    split = training.get("split") if isinstance(training.get("split"), dict) else {}
    n_val = len(split.get("val") or ())
    if not figures:
        return "it records no validation figures"
    return ", ".join(figures) + (f" on {n_val} validation image(s)" if n_val else "")


class TrainingResults:
    """Result handlers of the training controller (see the module docstring)."""

    # --- results ----------------------------------------------------------------------
    def _on_sample_losses(self, ev: SampleLosses) -> None:
        self._regions = dict(ev.regions)
        self.noisy.set_ranking(J.rank_losses(dict(ev.losses)), ev.regions, ev.epoch)

    def _on_fit_finished(self, ev: Finished) -> None:
        self.last_result = ev
        res = ev.result or {}
        guard = res.get("guard_rail")
        if self._finetune_from and guard:
            worse = bool(guard.get("new_is_worse"))
            verdict = guard.get("text") or (
                f"new {guard.get('new_val_fg_jaccard')} vs old {guard.get('init_val_fg_jaccard')}"
            )
            self.panel.show_message(
                f"Fine-tune guard-rail: {verdict}", "warning" if worse else "info"
            )
        self.val_jaccard = dict(res.get("per_image_val_jaccard") or {})
        for name, j in self.val_jaccard.items():
            self.workspace.set_scores(name, jaccard=j)
        history = res.get("history")
        if history:
            try:
                from cellseg_gui.core.training.diagnostics import advise

                self.advice.set_advice(advise(history, self._run_cfg))
            except Exception as exc:  # noqa: BLE001 - advice is optional, the run is not
                log.warning("advice failed: %s", exc)
        if ev.bundle_path and Path(ev.bundle_path).exists():
            self.workspace.add_model(ev.bundle_path)  # the Models list redraws from the news
            self.save_settings()
            self.predict(None, background=True)

    def _on_lr_finished(self, ev: Finished) -> None:
        if ev.result:
            self.lr_plot.set_result(ev.result)
        elif not ev.ok:
            self.lr_plot.set_failed(ev.message)

    def _on_check_finished(self, ev: Finished) -> None:
        r = ev.result or {}
        if "passed" in r:
            verdict = "passed" if r["passed"] else "did not pass"
            text = f"Overfit check {verdict}: Jaccard {r.get('jaccard', 0):.3f} after {r.get('steps')} steps."
            if r.get("advice"):
                text += f"\n{r['advice']}"
            self.panel.show_message(text, "info" if r["passed"] else "warning")

    def _on_predicted(self, ev: Predicted) -> None:
        if ev.error or ev.labels is None:
            self._status(f"{ev.name}: {ev.error}")
            return
        self.workspace.set_prediction(ev.name, ev.labels, ev.probability, ev.cells)
        self.panel.on_progress(
            ev.index + 1, ev.total, f"Predicted {ev.index + 1}/{ev.total}: {ev.name}"
        )
        if ev.jaccard is not None:
            self.val_jaccard[ev.name] = ev.jaccard
            self.workspace.set_scores(ev.name, jaccard=ev.jaccard, ap50=ev.ap50)
            self._gallery_add(ev)

    def _gallery_add(self, ev: Predicted) -> None:
        """The job made the difference thumbnail where it had the image and the mask: no
        disk read on the GUI thread (it re-read both for every predicted image)."""
        if ev.thumbnail is None:
            return
        self.gallery.update_item(
            GalleryItem(ev.name, ev.jaccard, None, None, ev.labels, ap50=ev.ap50,
                        thumbnail=ev.thumbnail, grey=ev.thumbnail_grey)
        )  # fmt: skip

    def _gallery_rescore(self, name: str) -> None:
        """The list's figures of ``name`` changed (an edit scored again, an accepted
        prediction): the gallery shows the same figures and difference, in order."""
        item = self.gallery.items.get(name)
        s = self.workspace.scores(name)
        if item is None or (item.jaccard, item.ap50) == (s.jaccard, s.ap50):
            return
        doc, pred = self.workspace.document(name), self.workspace.prediction(name)
        gt = doc.stored() if doc is not None else None
        labels = pred.labels if pred is not None else None
        if gt is not None and labels is not None and gt.shape != labels.shape:
            gt = labels = None
        self.gallery.rescore(name, s.jaccard, s.ap50, gt, labels)

    def _use_lr(self, lr: float) -> None:
        self.panel.form.set_field("lr", float(f"{lr:.2g}"))
        self.panel.show_message(f"Learning rate set to {lr:.2g}.")

    def _apply_advice(self, changes: dict) -> None:
        self.panel.form.apply_changes(changes)
        self.panelWanted.emit("Training")

    def set_active_model(self, path: str) -> None:
        self.workspace.set_active_model(path)  # the Models list redraws from the news
        self.save_settings()
        try:
            self._say_model("Active model", read_bundle_meta(path), path)
        except (BundleError, OSError):
            pass

    def load_model(self, path: str) -> None:
        try:
            meta = read_bundle_meta(path)
        except (BundleError, OSError) as exc:
            self.panel.show_message(str(exc), "error")
            return
        self.workspace.add_model(path)
        self.save_settings()
        self._say_model("Loaded model", meta, path)

    def _say_model(self, what: str, meta: dict, path: str) -> None:
        """Loading a model said nothing: name it and what it reached on its validation
        images, so the user knows which one predicts and what to expect of it."""
        text = f"{what} {display_name(meta, path)}: {model_summary(meta)}"  # as listed
        self.status.emit(text, 15000)

    def _show(self, name: str) -> None:
        self.showRequested.emit(name, None)

    def _show_region(self, name: str, region: tuple[int, int, int, int] | None) -> None:
        """Open a noisy-label entry: its image, zoomed to its worst crop (y, x, h, w)."""
        self.showRequested.emit(name, region)

    def _status(self, text: str) -> None:
        if text:
            self.status.emit(text, 5000)
