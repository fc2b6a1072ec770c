from mm15_components.language.chat import ChatTemplate
from mm15_components.language.decoder import CausalLM
from mm15_components.language.tokenizer import IMAGE_TOKEN, build_word_tokenizer, load_tokenizer

__all__ = ["IMAGE_TOKEN", "CausalLM", "ChatTemplate", "build_word_tokenizer", "load_tokenizer"]
