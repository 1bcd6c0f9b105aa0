"""Sentence models: vocabulary, masking, batching, exact log-likelihoods, cures, generation, CLI."""

import json
import math

import pyro
import pytest
import torch

from pyro_lvm.cli import main
from pyro_lvm.data import load_dataset
from pyro_lvm.data.text import (EOS_INDEX, PAD_INDEX, UNK_INDEX, Vocabulary, bucket_batches, lengths,
                                parse_sentences, to_tensor)
from pyro_lvm.evaluation import log_marginal_likelihood
from pyro_lvm.models import LSTMLM, TextVAE
from pyro_lvm.models.text_vae import LSTMDecoder
from pyro_lvm.objectives import ELBO, MeanFieldELBO

SENTENCES = [s.split() for s in ["the cat sat", "a dog ran far away", "the dog sat", "cats run"]]


def test_vocabulary_round_trip(tmp_path):
    v = Vocabulary.build(SENTENCES, max_size=8)
    assert v.words[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and len(v) == 8
    assert v.words[4:6] == ["dog", "sat"]  # most frequent first, ties alphabetical: dog, sat, the (2 each)
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w.words == v.words
    ids = w.encode("the dog sat on mars".split())
    assert ids[-2:] == [UNK_INDEX, UNK_INDEX]  # out of vocabulary
    assert w.decode(ids + [EOS_INDEX, 5]) == ["the", "dog", "sat", "<unk>", "<unk>"]
    assert len(Vocabulary.build(SENTENCES, max_size=None)) == 4 + 10
    with pytest.raises(ValueError, match="special"):
        Vocabulary.build(SENTENCES, max_size=4)


def test_empty_lines_are_skipped_and_tensors_end_with_eos():
    assert parse_sentences("a b\n \n\nc\n") == [["a", "b"], ["c"]]
    v = Vocabulary.build(SENTENCES)
    x = to_tensor(SENTENCES, v)
    assert x.shape == (4, 6) and lengths(x).tolist() == [4, 6, 4, 3]
    assert (x[torch.arange(4), lengths(x) - 1] == EOS_INDEX).all()
    assert (x[0, 4:] == PAD_INDEX).all()


def test_bucketed_batches_cover_every_row_once_with_similar_lengths():
    lens = torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))
    batches = bucket_batches(lens, 20, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = torch.tensor([float(lens[b].max() - lens[b].min()) for b in batches]).mean()
    assert spread < 3  # random batches of 20 would spread by about 50


def _tiny_vae(**kw):
    torch.manual_seed(0)
    return TextVAE(vocab_size=7, embed_dim=3, hidden_dim=4, encoder_hidden_dim=4, latent_dim=1, **kw)


def test_padding_never_counts_in_the_likelihood():
    lm = LSTMLM(vocab_size=7, embed_dim=3, hidden_dim=4)
    x = torch.tensor([[4, 5, 3, 0], [6, 3, 0, 0]])
    padded = torch.cat([x, torch.zeros(2, 5, dtype=torch.long)], 1)
    assert torch.allclose(lm.log_prob(x), lm.log_prob(padded))
    alone = lm.log_prob(torch.tensor([[6, 3]]))
    assert torch.allclose(lm.log_prob(x)[1], alone[0])


def test_lm_probabilities_over_a_tiny_sentence_space_sum_to_one():
    # vocab: 4 specials + 1 word; sentences "w^n <eos>", n >= 0. p(n) sums to 1 minus the tail mass.
    lm = LSTMLM(vocab_size=5, embed_dim=3, hidden_dim=4)
    with torch.no_grad():
        lm.decoder.out.bias[[0, 1, 2]] = -30.0  # mass only on "w" and <eos>
        total = 0.0
        for n in range(0, 60):
            x = torch.tensor([[4] * n + [EOS_INDEX]])
            total += lm.log_prob(x).exp().item()
    assert total == pytest.approx(1.0, abs=1e-3)


def test_importance_sampling_matches_quadrature_over_a_one_dimensional_code():
    m = _tiny_vae().eval()
    x = torch.tensor([[4, 5, 6, 3], [5, 3, 0, 0]])
    z = torch.linspace(-9, 9, 6001).unsqueeze(-1)
    with torch.no_grad():
        exact = []
        for row in x:
            tokens = m.trim(row.unsqueeze(0)).expand(z.shape[0], -1)
            log_joint = m.sentence_likelihood(tokens, z).log_prob(tokens) + torch.distributions.Normal(
                0.0, 1.0).log_prob(z[:, 0])
            exact.append(torch.logsumexp(log_joint, 0) + math.log(18 / 6000))
    est = log_marginal_likelihood(m.model, m.guide, x, num_particles=20000)
    assert torch.allclose(est, torch.stack(exact), atol=0.02), (est, exact)


def test_lm_and_vae_share_the_decoder():
    lm, vae = LSTMLM(vocab_size=7), _tiny_vae()
    assert type(lm.decoder) is type(vae.decoder) is LSTMDecoder
    assert vae.decoder.latent_dim == 1 and lm.decoder.latent_dim == 0


@pytest.mark.parametrize("token, index", [("unk", UNK_INDEX), ("zero", PAD_INDEX)])
def test_word_dropout_only_in_training_and_never_on_bos(token, index):
    m = _tiny_vae(word_dropout=1.0, word_dropout_token=token)
    x = torch.tensor([[4, 5, 3, 0, 0]])
    assert m.decoder_inputs(x).tolist() == [[2, index, index, index, PAD_INDEX]]
    m.eval()
    assert m.decoder_inputs(x).tolist() == [[2, 4, 5, 3, 0]]


@pytest.mark.parametrize("skip", [True, False])
def test_skip_connection_feeds_z_to_the_output_layer(skip):
    m = _tiny_vae(skip=skip)
    assert m.decoder.out.in_features == 4 + (1 if skip else 0)
    x = torch.tensor([[4, 5, 3], [6, 3, 0]])
    z = torch.zeros(2, 1, requires_grad=True)
    m.sentence_likelihood(x, z).log_prob(x).sum().backward()
    assert z.grad.abs().sum() > 0
    if skip:  # a change of z moves the logits even with the LSTM path cut off
        m.decoder.lstm.weight_ih_l0.data[:, -1] = 0
        m.decoder.init_state.weight.data.zero_()
        a = m.sentence_likelihood(x, torch.zeros(2, 1)).logits
        b = m.sentence_likelihood(x, torch.ones(2, 1)).logits
        assert not torch.allclose(a, b)


def test_zero_word_dropout_feeds_a_zero_vector_distinct_from_unk():
    m = _tiny_vae(word_dropout=1.0, word_dropout_token="zero")
    emb = m.decoder.embed(m.decoder_inputs(torch.tensor([[4, 5, 3]])))
    assert torch.equal(emb[0, 1:], torch.zeros_like(emb[0, 1:]))
    assert m.decoder.embed.weight[UNK_INDEX].abs().sum() > 0
    with pytest.raises(ValueError, match="word_dropout_token"):
        _tiny_vae(word_dropout_token="mask")


def test_decoder_is_reset_once_after_pretraining():
    m = _tiny_vae(reset_decoder_at=10)
    before = m.decoder.out.weight.clone()
    m.set_step(9)
    assert torch.equal(m.decoder.out.weight, before)
    m.set_step(10)
    after = m.decoder.out.weight.clone()
    assert not torch.equal(after, before)
    m.set_step(11)
    assert torch.equal(m.decoder.out.weight, after)


def test_free_bits_and_elbo_run_on_sentences():
    m = _tiny_vae()
    x = torch.tensor([[4, 5, 3, 0], [6, 3, 0, 0]])
    for objective in (ELBO(), ELBO(free_bits=0.5), MeanFieldELBO(free_bits=0.5)):
        terms = objective.terms(m.model, m.guide, x, data_size=10)
        terms.surrogate.backward()
        assert torch.isfinite(terms.loss) and m.encoder_embed.weight.grad.abs().sum() > 0


def test_bad_sentences_are_rejected_with_a_reason():
    m = _tiny_vae()
    with pytest.raises(ValueError, match="torch.long"):
        m.check_data(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="outside"):
        m.check_data(torch.tensor([[9, 3]]))
    with pytest.raises(ValueError, match="empty row"):
        m.check_data(torch.tensor([[4, 3], [0, 0]]))


def test_generation_is_made_of_vocabulary_words():
    m = _tiny_vae().eval()
    tokens = m.generate(4)
    assert tokens.shape[0] == 4 and (tokens < 7).all()
    assert (tokens == EOS_INDEX).any(1).all()  # every sentence is closed
    beams = m.beam_search(m.prior(2).sample(), beam_size=3, max_length=6)
    assert len(beams) == 2 and all(1 <= len(b) <= 6 for b in beams)
    assert len(m.homotopy(torch.tensor([4, 3]), torch.tensor([5, 6, 3]), steps=4)) == 4


def test_ptb_loader(data_dir):
    d = load_dataset("ptb", data_dir)
    assert d.train.shape[0] == 42068 and d.valid.shape[0] == 3370 and d.test.shape[0] == 3761
    assert len(d.vocab) == 10002 and int(lengths(d.test).sum()) == 78669 + 3761  # words + one <eos> per sentence
    with pytest.raises(ValueError, match="does not take"):
        load_dataset("binarized_mnist_small", max_vocab=10)


def test_cli_text_train_evaluate_sample_interpolate(tmp_path, data_dir, capsys):
    small = tmp_path / "sentences.txt"
    small.write_text("\n".join((data_dir / "ptb" / "ptb.valid.txt").read_text().splitlines()[:300]))
    run = str(tmp_path / "tv")
    tiny = ["--embed-dim", "8", "--hidden-dim", "16", "--encoder-hidden-dim", "16", "--latent-dim", "4"]
    assert main(["train", "textvae", "--data-file", str(small), "--epochs", "1", *tiny, "--word-dropout", "0.3",
                 "--kl-anneal", "linear", "--anneal-steps", "20", "--free-bits", "0.25", "--pretrain-steps", "3",
                 "--eval-particles", "3", "--no-progress", "--out", run]) == 0
    m = json.loads((tmp_path / "tv" / "metrics.json").read_text())
    for key in ("test_nll", "test_ppl", "test_kl", "test_recon", "mutual_info", "active_units",
                "nll_particles", "train_steps", "train_seconds", "tokens_per_second"):
        assert key in m and m[key] == m[key], key
    assert m["test_ppl"] > 1
    config = json.loads((tmp_path / "tv" / "config.json").read_text())
    assert config["model_config"]["reset_decoder_at"] == 3
    assert (config["train"]["lr"], config["train"]["batch_size"]) == (3e-3, 16)  # the text data set's defaults
    vocab = Vocabulary.load(tmp_path / "tv" / "vocab.json")
    capsys.readouterr()
    assert main(["sample", run, "--num", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["sentences"]) == 3
    assert all(w in vocab.index for s in out["sentences"] for w in s.split())
    assert main(["interpolate", run, "the company said it expects a loss", "the market rose sharply",
                 "--steps", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["sentences"]) == 4 and all(w in vocab.index for s in out["sentences"] for w in s.split())
    assert main(["evaluate", run, "--particles", "2", "--no-progress"]) == 0
    assert "test_ppl" in json.loads((tmp_path / "tv" / "eval.json").read_text())
    lm = str(tmp_path / "lm")
    assert main(["train", "lstmlm", "--data-file", str(small), "--epochs", "1", "--embed-dim", "8",
                 "--hidden-dim", "16", "--no-progress", "--out", lm]) == 0
    assert json.loads((tmp_path / "lm" / "metrics.json").read_text())["nll_particles"] == 1
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["objective"] == "elbo"
    assert main(["interpolate", lm, "a", "b"]) == 2  # no latent code: a clear error


def test_the_trainer_cuts_sentences_on_the_host_and_the_model_takes_them_as_they_come():
    """Training minibatches reach the model cut to their longest sentence, from widths the Trainer
    keeps on the host, and the model (presized) cuts nothing itself: the same parameters, bit for
    bit, as when the model cuts each minibatch (its widest row read from the tensor), and a
    minibatch that was not cut gives the same loss as one that was. The encoder's state at each
    sentence's <eos> is the final state of the packed sentences."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from pyro_lvm.train import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    lens = torch.randint(1, 9, (40,), generator=g)
    x = torch.randint(4, 7, (40, 12), generator=g)
    x[torch.arange(12) >= lens.unsqueeze(-1)] = PAD_INDEX
    x[torch.arange(40), lens - 1] = EOS_INDEX
    runs = {}
    for host in (True, False):
        model = _tiny_vae(word_dropout=0.3)
        seen = []
        inner = model.model

        def spy(rows=None, **kw):
            seen.append((rows.shape[1], int(lengths(rows).max()), model.is_presized))
            return inner(rows, **kw)

        model.model = spy
        t = Trainer(model, ELBO(), x, config=TrainConfig(epochs=2, batch_size=8, progress=False))
        if not host:
            t.row_widths = None  # the model cuts its minibatches itself
        t.fit()
        runs[host] = (model.state_dict(), [r["train_loss"] for r in t.history], seen)
    for k, v in runs[True][0].items():
        assert torch.equal(v, runs[False][0][k]), k
    assert runs[True][1] == runs[False][1]
    steps = [s for s in runs[True][2] if s[2]]  # 2 epochs of 5; the one other call checks the objective
    assert len(steps) == 10 and len(runs[True][2]) == 11
    assert all(width == longest for width, longest, _ in steps)
    assert not any(s[2] for s in runs[False][2])
    model = _tiny_vae()
    model.eval()  # no word dropout: the two calls draw the same z from the same seed
    cut = x[:8, :int(lengths(x[:8]).max())]
    assert cut.shape[1] < x.shape[1]
    pyro.set_rng_seed(1)
    with model.presized():  # taken as it comes: all 12 columns
        whole = ELBO().terms(model.model, model.guide, x[:8], data_size=40).loss
    pyro.set_rng_seed(1)
    torch.testing.assert_close(ELBO().terms(model.model, model.guide, cut, data_size=40).loss, whole)
    packed = pack_padded_sequence(model.encoder_embed(cut), lengths(cut), batch_first=True, enforce_sorted=False)
    _, (h, _) = model.encoder(packed)
    torch.testing.assert_close(model.encode(cut).mean, model.to_posterior(h[-1]).chunk(2, -1)[0])
