"""What a registered model version says about itself: a description and tags (outcome, data
digest, AUROC with its CI and the validation that produced it, synthetic), and a mark when it
fails a minimum, which `inflamrx promote` honours."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion

from inflamrx.modeling.metrics import Estimate, with_ci
from inflamrx.modeling.samplesize import SampleSize

BELOW_MINIMUM_TAG = "below_minimum"  # the reasons; absent when the version meets the minimum
# Floors, not targets (Riley et al.'s criteria warn far earlier, evaluation notes from 100
# test events): fewer events than candidate parameters, or a validation with so few events
# that its AUROC means little, and the model is not fit for use whatever it scores.
MIN_EVENTS_PER_PARAMETER = 1.0
MIN_TEST_EVENTS = 20


@dataclass(frozen=True)
class VersionCard:
    """The facts a registered version carries, taken from the job that registered it."""

    outcome: str
    data_digest: str
    synthetic: bool
    auroc: Estimate
    validation: str  # how the AUROC was obtained, e.g. "held-out test set (n=150, 52 events)"
    validation_events: int  # events among the patients that produced the AUROC
    sample_size: SampleSize  # Riley et al.'s criteria for the patients it was fitted on

    def shortfalls(self) -> list[str]:
        """Why the model fails a minimum (empty: it does not)."""
        found = []
        size = self.sample_size
        if size.epp < MIN_EVENTS_PER_PARAMETER:
            found.append(
                f"sample size: fewer events than candidate parameters ({size.events} "
                f"events, {size.parameters} parameters)"
            )
        if self.validation_events < MIN_TEST_EVENTS:
            found.append(
                f"sample size: {self.validation_events} events in the validation "
                f"(< {MIN_TEST_EVENTS})"
            )
        if not self.auroc.ci_low > 0.5:
            found.append(
                f"AUROC {with_ci(self.auroc.estimate, self.auroc.ci_low, self.auroc.ci_high)} "
                "does not exclude 0.5 (chance)"
            )
        return found

    def tags(self) -> dict[str, str]:
        out = {
            "outcome": self.outcome,
            "data_digest": self.data_digest,
            "synthetic_data": str(self.synthetic).lower(),
            "auroc": f"{self.auroc.estimate:.4f}",
            "auroc_ci": with_ci(self.auroc.estimate, self.auroc.ci_low, self.auroc.ci_high),
            "validation": self.validation,
        }
        reasons = self.shortfalls()
        if reasons:
            out[BELOW_MINIMUM_TAG] = "; ".join(reasons)
        return out

    def description(self) -> str:
        auroc = with_ci(self.auroc.estimate, self.auroc.ci_low, self.auroc.ci_high, 2, "95% CI")
        text = f"Predicts {self.outcome}. AUROC {auroc} on the {self.validation}."
        if self.synthetic:
            text = "SYNTHETIC training data. " + text
        reasons = self.shortfalls()
        if reasons:
            text = (
                "BELOW MINIMUM, not for use: "
                + "; ".join(reasons)
                + ". `inflamrx promote` refuses it without --force. "
                + text
            )
        return text


def annotate_version(name: str, version: str, card: VersionCard) -> None:
    """Write the card's description and tags on a registered version."""
    client = mlflow.MlflowClient()
    client.update_model_version(name, version, description=card.description())
    for key, value in card.tags().items():
        client.set_model_version_tag(name, version, key, value[:5000])


def below_minimum(version: ModelVersion) -> str | None:
    """The reasons a version was marked below the minimum, or None."""
    return (version.tags or {}).get(BELOW_MINIMUM_TAG)
