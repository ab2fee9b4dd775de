from tubelet.data.loader import ResumableSampler, ShardSampler


def keys(sampler: ResumableSampler) -> list[tuple[int, int]]:
    return [key for batch in sampler for key in batch]


def test_resumable_sampler_continues_at_the_next_unseen_batch():
    full = ResumableSampler(23, batch_size=3, seed=3)
    full.set_epoch(2)
    batches = list(full)
    assert [len(b) for b in batches] == [3] * 7  # 23 // 3 whole batches, the tail dropped
    part = ResumableSampler(23, batch_size=3, seed=3)
    part.set_epoch(2, batches_done=4)
    assert list(part) == batches[4:] and len(part) == 3
    got = keys(full)
    assert all(epoch == 2 for _, epoch in got) and len({i for i, _ in got}) == 21
    assert full.samples_before(2, 4) == 12 and full.batches_before(2, 12) == 4


def test_epochs_shuffle_differently_and_ranks_are_disjoint_and_equal_length():
    s = ResumableSampler(23, batch_size=1, seed=0)
    s.set_epoch(0)
    e0 = [i for i, _ in keys(s)]
    s.set_epoch(1)
    assert [i for i, _ in keys(s)] != e0
    shares = []
    for rank in range(3):
        r = ResumableSampler(23, batch_size=1, seed=0, rank=rank, world_size=3)
        r.set_epoch(0)
        shares.append([i for i, _ in keys(r)])
    assert [len(x) for x in shares] == [7, 7, 7]
    assert len(set(sum(shares, []))) == 21


def test_shard_sampler_gives_each_sample_to_exactly_one_rank():
    got = sorted(sum((list(ShardSampler(11, rank=r, world_size=4)) for r in range(4)), []))
    assert got == list(range(11))
    # grouped by video: 5 videos x 3 views, each video's views whole and in a row on one rank
    shares = [list(ShardSampler(15, rank=r, world_size=2, group_size=3)) for r in range(2)]
    assert shares == [[0, 1, 2, 6, 7, 8, 12, 13, 14], [3, 4, 5, 9, 10, 11]]


def shares(num_samples: int, world_size: int, *, batch_size: int = 1,
           samples_done: int = 0) -> list[list[int]]:
    """Each rank's keys of epoch 0, resumed after `samples_done` samples over all ranks."""
    out = []
    for rank in range(world_size):
        s = ResumableSampler(num_samples, batch_size=batch_size, seed=5, rank=rank,
                             world_size=world_size)
        s.set_epoch(0, batches_done=s.batches_before(0, samples_done))
        out.append([i for i, _ in keys(s)])
    return out


def test_resume_at_the_same_world_size_is_unchanged():
    full = shares(23, 2)
    for k in range(12):  # each rank has drawn k keys: resume after k global batches
        assert shares(23, 2, samples_done=2 * k) == [full[0][k:], full[1][k:]]


def test_world_size_change_continues_with_exactly_the_unseen_samples():
    order = sum(zip(*shares(24, 2)), ())  # interleave ranks: the epoch's order
    seen = set(order[:10])  # 2 ranks x batch 1 x 5 batches
    one = shares(24, 1, batch_size=2, samples_done=10)[0]  # the same global batch on 1 rank
    assert one == list(order[10:]) and not seen & set(one)
    halves = shares(24, 2, batch_size=1, samples_done=10)
    assert sorted(sum(halves, [])) == sorted(order[10:])
