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
    # identification 3 of the dSprites study (7 behaves alike): under the model-set rule their ray-10 intervals reach far above
    # the observed bracket; conditioned on the relay they keep only the plants whose integral-ray gain it confirms.
    # relay_conditioned_goals (re-evaluating a model-set file) and the relay-conditioned rule give the same intervals.
    from klcontrol.vae_plant.experiments.repeatability import identification_summary, relay_conditioned_goals

    gains = [(0.0, 0.1), (1.5, 0.15), (2.0, 0.2)]
    doc = dict(beta_star=4.0, relay=[], runs=[dict(kp=1.5, ki=0.15, seed=0, observed_stable=False)],
               identifications=[])
    conditioned = {}
    for seed in (3,):
        folder = f"docs/results/repeatability/dsprites/s{seed}"
        plain, _ = identification_summary(seed, folder, 4.0, (0.0, 10.0), gains, rule="model-set")
        cond, _ = identification_summary(seed, folder, 4.0, (0.0, 10.0), gains, rule="relay-conditioned")
        rc = cond["relay_conditioning"]["10"]
        assert rc["conditioned"] and rc["kept"] < rc["plants"] and rc["before"] == plain["critical_gain"]["10"]
        assert cond["critical_gain"]["10"][1] < plain["critical_gain"]["10"][1] and cond["critical_gain"]["10"][1] < 0.2
        assert cond["critical_gain"]["0"] == plain["critical_gain"]["0"]  # the relay's own ray is unchanged
        doc["identifications"].append(plain)
        conditioned[seed] = cond["critical_gain"]["10"]
    r = relay_conditioned_goals(doc)
    assert {seed: r["intervals"][seed]["after"] for seed in conditioned} == conditioned


def test_goals_per_verdict_per_network_and_on_subsets(tmp_path):
    # MNIST identifications 0 and 1 judged under the relay-conditioned rule; the runs of stability_s1.json are
    # labelled as network 1's, so only identification 1 has own-network runs
    doc = write_repeatability(tmp_path / "m.json", "mnist", 64, 4.0,
                              {0: "klcontrol/data/mnist/identify", 1: "klcontrol/data/mnist/identify_s1"},
                              ["1=docs/results/mnist/stability_s1.json"], rule="relay-conditioned",
                              subsets={"one": [1]})
    g, runs = doc["goals"], doc["runs"]
    assert doc["rule"] == "relay-conditioned" and all(r["network"] == 1 for r in runs)
    gains = {(r["kp"], r["ki"]) for r in runs}
    verdicts = [v for i in doc["identifications"] for v in i["verdicts"] if (v["kp"], v["ki"]) in gains]
    assert g["undecided_fraction_of_verdicts"] == sum(v["predicted"] == "undecided" for v in verdicts) / len(verdicts)
    pairs = [(v, r) for i in doc["identifications"] if i["seed"] == 1 for v in i["verdicts"] for r in runs
             if (v["kp"], v["ki"]) == (r["kp"], r["ki"])]
    decided = [(v, r) for v, r in pairs if v["predicted"] != "undecided"]
    own = g["own_network"]
    assert own["total"] == len(pairs) == len(runs) and own["decided"] == len(decided)
    assert own["agree"] == sum((v["predicted"] == "stable") == r["observed_stable"] for v, r in decided)
    sub = doc["goals_on_subsets"]["one"]
    assert sub["runs"] == len(runs) and sub["goals"]["identifications"] == 1
    assert sub["goals"]["decided"] == len(decided)
    for i in doc["identifications"]:  # conditioning records what it did on Kp = 10·Ki
        rc = i.get("relay_conditioning", {}).get("10")
        if rc is not None:
            assert rc["kept"] <= rc["plants"] and (rc["after"] == i["critical_gain"]["10"])


def test_label_consistency_counts_the_fewest_labels_out_of_order_per_network_and_ray():
    from itertools import product

    from klcontrol.vae_plant.experiments.repeatability import label_consistency

    def run(net, kp, ki, ok, seed=0):
        return dict(network=net, kp=kp, ki=ki, seed=seed, observed_stable=ok)

    runs = [run(1, 0.0, k, ok) for k, ok in ((0.05, True), (0.075, False), (0.1, True), (0.125, False), (0.15, False))]
    runs += [run(1, 10 * k, k, ok) for k, ok in ((0.1, True), (0.15, False))]
    runs += [run(2, 0.0, k, False) for k in (0.1, 0.2)]
    out = {(g["network"], g["ray"]): g for g in label_consistency(runs, [0.0, 10.0])}
    assert out[(1, "0")]["fewest_changes"] == 1 and out[(1, "0")]["runs"] == 5
    assert out[(1, "10")]["fewest_changes"] == 0 and out[(2, "0")]["fewest_changes"] == 0
    # against brute force over every relabelling of network 1's Kp = 0 runs
    ray0 = [r for r in runs if r["network"] == 1 and r["kp"] == 0]
    fewest = min(sum(a != r["observed_stable"] for a, r in zip(labels, ray0))
                 for labels in product([True, False], repeat=len(ray0))
                 if all(not (x["ki"] < y["ki"] and not lx and ly) for x, lx in zip(ray0, labels)
                        for y, ly in zip(ray0, labels)))
    assert fewest == out[(1, "0")]["fewest_changes"]
