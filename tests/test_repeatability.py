"""The repeatability file (vae_plant/experiments/repeatability.py) from shipped MNIST identifications and runs."""
import json

from klcontrol.vae_plant.experiments.repeatability import write_repeatability


def test_the_file_has_the_issue_format_and_its_labels_match_the_traces(tmp_path):
    from klcontrol.analysis.identification.traces import read_trace
    from klcontrol.analysis.verdicts.observed import observed_stability

    doc = write_repeatability(tmp_path / "mnist.json", "mnist", 64, 4.0,
                              {0: "klcontrol/data/mnist/identify", 1: "klcontrol/data/mnist/identify_s1"},
                              ["docs/results/mnist/stability_s1.json"])
    back = json.loads((tmp_path / "mnist.json").read_text())
    assert back["plant"] == "mnist" and back["batch_size"] == 64 and back["beta_star"] == 4.0
    for i in back["identifications"]:
        assert set(i["critical_gain"]) == {"0", "10"} and len(i["verdicts"]) >= 8
        assert {v["predicted"] for v in i["verdicts"]} <= {"stable", "unstable", "undecided"}
    for r in back["relay"]:
        assert r["trace"].endswith(".csv.gz") and r["critical_gain"]["0"] > 0 and r["period"] > 2
    for r in back["runs"][:3]:  # labels agree with the traces they name
        tr = read_trace(r["trace"])
        assert observed_stability(tr.beta, 4.0)["stable"] == r["observed_stable"]
    assert doc["goals"]["identifications"] == 2
