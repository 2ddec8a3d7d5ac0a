from services.payments.app import main

main()
