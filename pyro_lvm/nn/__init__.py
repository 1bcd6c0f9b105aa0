"""Neural networks with no ``pyro.sample`` in them."""

from pyro_lvm.nn.conv import ConvDecoder, ConvEncoder, ResidualBlock, grid_sizes, image_chw
from pyro_lvm.nn.mlp import ACTIVATIONS, MLP, parse_hidden
from pyro_lvm.nn.networks import NETWORKS, check_network, decoder_network, encoder_network, set_output_bias

__all__ = ["ACTIVATIONS", "ConvDecoder", "ConvEncoder", "MLP", "NETWORKS", "ResidualBlock", "check_network",
           "decoder_network", "encoder_network", "grid_sizes", "image_chw", "parse_hidden", "set_output_bias"]
