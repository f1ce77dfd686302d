"""Model: build or load the HF LLaMA (meta device for big ones) and select the attention backend."""
