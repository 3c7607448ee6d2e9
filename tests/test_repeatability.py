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


def test_the_relay_conditioned_set_narrows_ray_10_where_the_relay_disagrees_with_part_of_the_set():
    # exploratory rule (README says so): identifications 3 and 7 of the dSprites study, whose ray-10 intervals
    # reach far above the observed bracket, keep only the plants whose integral-ray gain the relay confirms
    import json

    from klcontrol.vae_plant.experiments.repeatability import relay_conditioned_goals

    doc = json.load(open("docs/results/repeatability/dsprites.json"))
    doc["identifications"] = [i for i in doc["identifications"] if i["seed"] in (3, 7)]
    r = relay_conditioned_goals(doc)
    for seed in (3, 7):
        iv = r["intervals"][seed]
        assert iv["kept"] < iv["plants"] and iv["after"][1] < iv["before"][1] and iv["after"][1] < 0.2
    assert r["goals"]["intervals_meeting_the_bracket"] == r["goals"]["intervals"] == 4
