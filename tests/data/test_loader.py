from tubelet.data.loader import ResumableSampler, ShardSampler


def test_resumable_sampler_continues_at_the_next_unseen_key():
    full = ResumableSampler(23, seed=3)
    full.set_epoch(2)
    keys = list(full)
    part = ResumableSampler(23, seed=3)
    part.set_epoch(2, consumed=9)
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


def shares(num_samples: int, world_size: int, *, epoch: int = 0, consumed: int = 0) -> list[list[int]]:
    out = []
    for rank in range(world_size):
        s = ResumableSampler(num_samples, seed=5, rank=rank, world_size=world_size)
        s.set_epoch(epoch, consumed=consumed)
        out.append([i for i, _ in s])
    return out


def test_consumed_counts_over_all_ranks_so_resume_at_the_same_world_size_is_unchanged():
    full = shares(23, 2)
    for k in range(12):  # each rank has drawn k keys: resume with consumed = k * world size
        assert shares(23, 2, consumed=2 * k) == [full[0][k:], full[1][k:]]


def test_world_size_change_continues_with_exactly_the_unseen_samples():
    order = sum(zip(*shares(24, 2)), ())  # interleave ranks: the epoch's order
    k = 5  # each of 2 ranks consumed 5 keys -> order[:10] is seen
    seen = set(order[:2 * k])
    one = shares(24, 1, consumed=2 * k)[0]
    assert one == list(order[2 * k:]) and not seen & set(one)
    three = shares(24, 3, consumed=2 * k)  # 14 left over 3 ranks: 4 each, 2 dropped
    assert [len(x) for x in three] == [4, 4, 4]
    assert sorted(sum(three, [])) == sorted(order[10:22])
