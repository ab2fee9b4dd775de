from tubelet.data.loader import ResumableSampler, ShardSampler


def test_resumable_sampler_continues_at_the_next_unseen_key():
    full = ResumableSampler(23, seed=3)
    full.set_epoch(2)
    keys = list(full)
    part = ResumableSampler(23, seed=3)
    part.set_epoch(2, start=9)
    assert list(part) == keys[9:] and len(part) == 23 - 9
    assert all(epoch == 2 for _, epoch in keys) and sorted(i for i, _ in keys) == list(range(23))


def test_epochs_shuffle_differently_and_ranks_are_disjoint_and_equal_length():
    s = ResumableSampler(23, seed=0)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    s.set_epoch(1)
    assert [i for i, _ in s] != e0
    shares = []
    for rank in range(3):
        r = ResumableSampler(23, seed=0, rank=rank, world_size=3)
        r.set_epoch(0)
        shares.append([i for i, _ in r])
    assert [len(x) for x in shares] == [7, 7, 7]
    assert len(set(sum(shares, []))) == 21


def test_shard_sampler_gives_each_sample_to_exactly_one_rank():
    got = sorted(sum((list(ShardSampler(11, rank=r, world_size=4)) for r in range(4)), []))
    assert got == list(range(11))
