"""Publishing: the card's inputs, the card, its pictures and the push to the Hub."""
