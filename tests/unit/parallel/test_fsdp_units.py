"""Which blocks become FSDP units of their own: never a module twice, never one parameter
in two units (FSDP2 refuses both)."""

from torch import nn

from scaletrain.models.registry import default_block_types
from scaletrain.parallel.blocks import find_blocks, separate_units


class TiedNet(nn.Module):
    """A user module: embedding and head share one weight, a norm sits at the top level."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(2))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight


def test_tied_pairs_and_units_taken_already_are_left_to_the_root():
    model = TiedNet()
    blocks = find_blocks(model, block_types=default_block_types(model))
    assert model.norm in blocks and model.embed in blocks and model.head in blocks
    units = separate_units(model, blocks, taken=(model.norm,))
    assert units == list(model.layers)


def test_blocks_sharing_nothing_all_stay_units():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    blocks = find_blocks(model, block_types=default_block_types(model))
    assert separate_units(model, blocks) == [model[0], model[2]]
