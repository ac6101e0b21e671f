#compdef gen

_gen_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _GEN_COMPLETE=complete_zsh gen)
}

compdef _gen_completion gen
