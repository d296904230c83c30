"""tap-bottlecrm: BottleCRM's accounts as Coulisse's canonical streams."""
